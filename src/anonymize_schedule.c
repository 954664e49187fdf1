/*-------------------------------------------------------------------------
 *
 * anonymize_schedule.c
 *	  The instants of the daily run: anonymize.run_at (HH:MM) on each local
 *	  date of anonymize.timezone.
 *
 * Every local date has exactly one scheduled instant, so the worker runs
 * once a day across daylight-saving changes: a run_at that does not exist
 * on the day clocks go forward (02:30 in Europe/Oslo) is read as
 * PostgreSQL reads such a local time (an hour later, 03:30 summer time),
 * and one that happens twice on the day clocks go back runs once, at the
 * instant PostgreSQL gives that local time.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/date.h"
#include "utils/timestamp.h"

#include "anonymize_schedule.h"
#include "anonymize_settings.h"

/* the local date of t in anonymize.timezone */
static DateADT
schedule_local_date(TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (timestamp2tm(t, &tzoff, &tm, &fsec, NULL, tz) != 0)
		elog(ERROR, "timestamp out of range");
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/* the scheduled instant on local date d */
static TimestampTz
schedule_on(DateADT d, int minutes, pg_tz *tz)
{
	struct pg_tm tm;
	TimestampTz result;
	int			tzoff;

	memset(&tm, 0, sizeof(tm));
	j2date(d + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tm.tm_hour = minutes / 60;
	tm.tm_min = minutes % 60;
	tzoff = DetermineTimeZoneOffset(&tm, tz);
	if (tm2timestamp(&tm, 0, &tzoff, &result) != 0)
		elog(ERROR, "timestamp out of range");
	return result;
}

/* The latest scheduled instant at or before t. */
TimestampTz
anonymize_schedule_latest_at(TimestampTz t, int minutes, pg_tz *tz)
{
	DateADT		d = schedule_local_date(t, tz);
	TimestampTz s = schedule_on(d, minutes, tz);

	/* around a daylight-saving change, look one more day back if needed */
	while (s > t)
		s = schedule_on(--d, minutes, tz);
	return s;
}

/* The first scheduled instant after t. */
TimestampTz
anonymize_schedule_next_at(TimestampTz t, int minutes, pg_tz *tz)
{
	DateADT		d = schedule_local_date(t, tz);
	TimestampTz s = schedule_on(d, minutes, tz);

	while (s <= t)
		s = schedule_on(++d, minutes, tz);
	return s;
}

/* The latest scheduled run at or before t, under the settings. */
TimestampTz
anonymize_schedule_latest(TimestampTz t)
{
	return anonymize_schedule_latest_at(t, anonymize_run_at_minutes(),
										anonymize_tz());
}

/* The first scheduled run after t, under the settings. */
TimestampTz
anonymize_schedule_next(TimestampTz t)
{
	return anonymize_schedule_next_at(t, anonymize_run_at_minutes(),
									  anonymize_tz());
}

PG_FUNCTION_INFO_V1(anonymize_schedule_next_sql);

/*
 * anonymize._schedule_next(after timestamptz, run_at time, timezone text):
 * the first run after "after" for that run_at and time zone, so that tests
 * can pin the schedule across daylight-saving changes.
 */
Datum
anonymize_schedule_next_sql(PG_FUNCTION_ARGS)
{
	TimestampTz after = PG_GETARG_TIMESTAMPTZ(0);
	TimeADT		run_at = PG_GETARG_TIMEADT(1);
	char	   *tzname = text_to_cstring(PG_GETARG_TEXT_PP(2));
	pg_tz	   *tz = pg_tzset(tzname);

	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", tzname)));
	if (TIMESTAMP_NOT_FINITE(after))
		PG_RETURN_TIMESTAMPTZ(after);
	PG_RETURN_TIMESTAMPTZ(anonymize_schedule_next_at(after,
													 (int) (run_at / USECS_PER_MINUTE),
													 tz));
}
