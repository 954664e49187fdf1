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

#include "utils/datetime.h"
#include "utils/date.h"
#include "utils/timestamp.h"

#include "anonymize_schedule.h"
#include "anonymize_settings.h"

/* the local date of t in anonymize.timezone */
static DateADT
anonymize_schedule_local_date(TimestampTz t)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (timestamp2tm(t, &tzoff, &tm, &fsec, NULL, anonymize_tz()) != 0)
		elog(ERROR, "timestamp out of range");
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/* the scheduled instant on local date d */
static TimestampTz
anonymize_schedule_on(DateADT d)
{
	struct pg_tm tm;
	TimestampTz result;
	int			minutes = anonymize_run_at_minutes();
	int			tzoff;

	memset(&tm, 0, sizeof(tm));
	j2date(d + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tm.tm_hour = minutes / 60;
	tm.tm_min = minutes % 60;
	tzoff = DetermineTimeZoneOffset(&tm, anonymize_tz());
	if (tm2timestamp(&tm, 0, &tzoff, &result) != 0)
		elog(ERROR, "timestamp out of range");
	return result;
}

TimestampTz
anonymize_schedule_latest(TimestampTz t)
{
	DateADT		d = anonymize_schedule_local_date(t);
	TimestampTz s = anonymize_schedule_on(d);

	/* around a daylight-saving change, look one more day back if needed */
	while (s > t)
		s = anonymize_schedule_on(--d);
	return s;
}

TimestampTz
anonymize_schedule_next(TimestampTz t)
{
	DateADT		d = anonymize_schedule_local_date(t);
	TimestampTz s = anonymize_schedule_on(d);

	while (s <= t)
		s = anonymize_schedule_on(++d);
	return s;
}
