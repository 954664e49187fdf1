/*-------------------------------------------------------------------------
 *
 * anonymize_settings.c
 *	  Declares the anonymize.* settings and checks their values.
 *
 * Settings that change what a run does (country code, trunk prefix, time
 * zone, replacement) are PGC_SUSET, so that a superuser can try them in a
 * session while the portal's role cannot change them; the worker and run()
 * read them from the server's configuration.  Settings of the schedule are
 * PGC_SIGHUP, and so are the databases served (the launcher starts and
 * stops workers on a reload).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "anonymize_ledger.h"
#include "anonymize_retention.h"
#include "anonymize_settings.h"
#include "anonymize_throttle.h"

char	   *anonymize_database = NULL;
char	   *anonymize_country_code = NULL;
char	   *anonymize_trunk_prefix = NULL;
char	   *anonymize_timezone_name = NULL;
char	   *anonymize_run_at = NULL;
char	   *anonymize_replacement = NULL;
int			anonymize_batch_size = 10000;
int			anonymize_rescan_interval = 60;
int			anonymize_batch_delay = 0;
double		anonymize_cost_delay = ANONYMIZE_COST_DELAY_DEFAULT;
int			anonymize_run_nice = ANONYMIZE_RUN_NICE_DEFAULT;
int			anonymize_process_nice = 0;
int			anonymize_cost_limit = ANONYMIZE_COST_LIMIT_DEFAULT;
int			anonymize_max_parallel_workers = 2;
int			anonymize_parallel_min_table_size = 1000;
int			anonymize_parallel_rewrite_min_rows = -1;
bool		anonymize_refresh_materialized_views = true;
bool		anonymize_rebuild_indexes = true;
int			anonymize_max_rows_per_request = 100000;
bool		anonymize_enabled = true;

/* Is s all digits, at most maxlen of them? */
static bool
settings_all_digits(const char *s, int maxlen)
{
	int			n = 0;

	for (; *s; s++, n++)
		if (!isdigit((unsigned char) *s))
			return false;
	return n <= maxlen;
}

/* GUC check hook of anonymize.country_code */
static bool
settings_check_country_code(char **newval, void **extra, GucSource source)
{
	if (!settings_all_digits(*newval, 3) || (*newval)[0] == '0')
	{
		GUC_check_errdetail("A country code is 1 to 3 digits and does not start with 0.");
		return false;
	}
	return true;
}

/* GUC check hook of anonymize.trunk_prefix */
static bool
settings_check_trunk_prefix(char **newval, void **extra, GucSource source)
{
	if (!settings_all_digits(*newval, 2))
	{
		GUC_check_errdetail("A trunk prefix is empty or 1 to 2 digits.");
		return false;
	}
	return true;
}

/* GUC check hook of anonymize.timezone */
static bool
settings_check_timezone(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] == '\0')
		return true;
	if (pg_tzset(*newval) == NULL)
	{
		GUC_check_errdetail("\"%s\" is not a time zone name known to this server.",
							*newval);
		return false;
	}
	return true;
}

/* "HH:MM", 00:00 to 23:59; returns minutes after midnight or -1 */
static int
settings_parse_run_at(const char *s)
{
	int			h,
				m;
	char		tail;

	if (sscanf(s, "%d:%d%c", &h, &m, &tail) != 2)
		return -1;
	if (h < 0 || h > 23 || m < 0 || m > 59)
		return -1;
	return h * 60 + m;
}

/* GUC check hook of anonymize.run_at */
static bool
settings_check_run_at(char **newval, void **extra, GucSource source)
{
	if (settings_parse_run_at(*newval) < 0)
	{
		GUC_check_errdetail("The daily run time is written HH:MM, from 00:00 to 23:59.");
		return false;
	}
	return true;
}

/* GUC check hook of anonymize.replacement */
static bool
settings_check_replacement(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] == '\0')
	{
		GUC_check_errdetail("The replacement text must not be empty.");
		return false;
	}
	return true;
}

/* anonymize.database: "*" alone, database names separated by commas, or empty */
static bool
settings_check_database(char **newval, void **extra, GucSource source)
{
	bool		all;
	List	   *names = anonymize_database_parse(*newval, &all);

	/* empty: no database, no worker */
	if (names == NIL && !all && (*newval)[strspn(*newval, " \t")] != '\0')
	{
		GUC_check_errdetail("anonymize.database is a database name, a comma-separated list of names, or * for every database that has the extension.");
		return false;
	}
	list_free_deep(names);
	return true;
}

/* The settings of the launcher: which databases, how often it looks. */
static void
settings_define_workers(void)
{
	DefineCustomStringVariable("anonymize.database",
							   "Databases the anonymize background workers serve: a name, a comma-separated list, or * for every database with the extension.",
							   NULL,
							   &anonymize_database,
							   "postgres",
							   PGC_SIGHUP,
							   0,
							   settings_check_database, NULL, NULL);

	DefineCustomIntVariable("anonymize.rescan_interval",
							"Seconds between two looks of the launcher, with anonymize.database = '*', at databases without the extension.",
							"CREATE EXTENSION and wake() tell the launcher at once; this is for what they miss, and for tests.",
							&anonymize_rescan_interval,
							60, 1, 3600,
							PGC_SIGHUP,
							GUC_UNIT_S | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
}

/* The settings of identifiers: phone numbers, time. */
static void
settings_define_identity(void)
{

	DefineCustomStringVariable("anonymize.country_code",
							   "Country code of national phone numbers, digits only (for example 47).",
							   NULL,
							   &anonymize_country_code,
							   "",
							   PGC_SUSET,
							   0,
							   settings_check_country_code, NULL, NULL);

	DefineCustomStringVariable("anonymize.trunk_prefix",
							   "Trunk prefix dropped from national phone numbers (for example 0).",
							   NULL,
							   &anonymize_trunk_prefix,
							   "",
							   PGC_SUSET,
							   0,
							   settings_check_trunk_prefix, NULL, NULL);

	DefineCustomStringVariable("anonymize.timezone",
							   "Time zone of to_date and run_at; empty means the server's TimeZone.",
							   NULL,
							   &anonymize_timezone_name,
							   "",
							   PGC_SUSET,
							   0,
							   settings_check_timezone, NULL, NULL);
}

/* The pace of the run: its throttle and how many processes scan. */
static void
settings_define_pace(void)
{
	DefineCustomRealVariable("anonymize.cost_delay",
							 "Cost-based delay of the run (its scan, rewrite and vacuum), as autovacuum's: the time it sleeps each time it has done anonymize.cost_limit of work.",
							 "0 runs at full speed.",
							 &anonymize_cost_delay,
							 ANONYMIZE_COST_DELAY_DEFAULT, 0, 100,
							 PGC_SIGHUP,
							 GUC_UNIT_MS,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("anonymize.cost_limit",
							"The work (vacuum_cost_page_hit, _miss and _dirty per page) after which the run sleeps anonymize.cost_delay.",
							NULL,
							&anonymize_cost_limit,
							ANONYMIZE_COST_LIMIT_DEFAULT, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("anonymize.run_nice",
							"CPU priority (nice value) of the processes of a run, as renice: higher yields the cores to other work first.",
							"0 leaves it as the server's.  A process keeps the value it got, as it cannot raise its priority again.",
							&anonymize_run_nice,
							ANONYMIZE_RUN_NICE_DEFAULT, 0, 19,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("anonymize.process_nice",
							"CPU priority (nice value) of this session and of the parallel workers it starts.",
							"Set by a run for its own processes from anonymize.run_nice, so that PostgreSQL's parallel workers of its VACUUM get the same priority.  Only lowers a priority, never raises it.",
							&anonymize_process_nice,
							0, 0, 19,
							PGC_SUSET,
							GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							NULL, anonymize_throttle_assign_nice, NULL);

	DefineCustomIntVariable("anonymize.max_parallel_workers",
							"Processes that scan a large table of the run together, the run itself included.",
							"1 scans serially.  Each other one is a background worker (max_worker_processes).",
							&anonymize_max_parallel_workers,
							2, 1, 64,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("anonymize.parallel_min_table_size",
							"Smallest table (or partition) the run scans with several processes.",
							NULL,
							&anonymize_parallel_min_table_size,
							1000, 0, INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_BLOCKS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("anonymize.parallel_rewrite_min_rows",
							"Fewest matching rows for which the run shares its rewrite with its workers.",
							"-1, the default, never: on the benchmark machine a shared rewrite was slower.",
							&anonymize_parallel_rewrite_min_rows,
							-1, -1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	/* kept so that a configuration that still sets it is valid */
	DefineCustomIntVariable("anonymize.batch_delay",
							"Obsolete and ignored: anonymize.cost_delay and anonymize.cost_limit throttle the run.",
							NULL,
							&anonymize_batch_delay,
							0, 0, 10000,
							PGC_SIGHUP,
							GUC_UNIT_MS | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
}

/* The settings of the run: schedule, replacement, batches, limits. */
static void
settings_define_run(void)
{
	DefineCustomStringVariable("anonymize.run_at",
							   "Daily time of the scheduled run, HH:MM in anonymize.timezone.",
							   NULL,
							   &anonymize_run_at,
							   "02:00",
							   PGC_SIGHUP,
							   0,
							   settings_check_run_at, NULL, NULL);

	DefineCustomStringVariable("anonymize.replacement",
							   "Text written in place of an anonymized identifier.",
							   NULL,
							   &anonymize_replacement,
							   "Anonymized",
							   PGC_SUSET,
							   0,
							   settings_check_replacement, NULL, NULL);

	DefineCustomIntVariable("anonymize.batch_size",
							"Rows rewritten per transaction.",
							NULL,
							&anonymize_batch_size,
							10000, 1, 10000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("anonymize.max_rows_per_request",
							"A request that would rewrite more rows is held for confirmation; 0 means no limit.",
							NULL,
							&anonymize_max_rows_per_request,
							100000, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("anonymize.enabled",
							 "Whether the background worker runs on schedule.",
							 NULL,
							 &anonymize_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("anonymize.rebuild_indexes",
							 "Whether the run rebuilds (REINDEX CONCURRENTLY) an index that may keep an erased identifier as a live key.",
							 "A btree separator or high key, a GIN entry, a BRIN range's bounds or a GiST union key outlives the row it came from.",
							 &anonymize_rebuild_indexes,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("anonymize.refresh_materialized_views",
							 "Whether the run refreshes the materialized views that read the targets it rewrote.",
							 "Off leaves them, with the old values, until they are refreshed.",
							 &anonymize_refresh_materialized_views,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);
}

/* The retention settings: intervals as text, checked as intervals. */
static void
settings_define_retention(void)
{
	DefineCustomStringVariable("anonymize.request_retention",
							   "Done requests older than this are purged from the page by the nightly run; empty means never.",
							   "Their receipts are kept as per-day counts in anonymize.request_log_daily.",
							   &anonymize_request_retention,
							   "12 months",
							   PGC_SUSET,
							   0,
							   anonymize_check_retention, NULL, NULL);

	DefineCustomStringVariable("anonymize.sms_survey_retention",
							   "SMS-survey answers older than this are anonymized by the nightly run; empty means never.",
							   NULL,
							   &anonymize_sms_survey_retention,
							   "",
							   PGC_SUSET,
							   0,
							   anonymize_check_retention, NULL, NULL);

	DefineCustomStringVariable("anonymize.ledger_retention",
							   "Digests of requests purged from the page stay in force this long after they were done; empty means forever.",
							   "While in force, every run erases rows of their identifiers up to their to_date, and is_anonymized() answers true.",
							   &anonymize_ledger_retention,
							   "",
							   PGC_SUSET,
							   0,
							   anonymize_check_retention, NULL, NULL);
}

/* Declare every anonymize.* setting and reserve the prefix. */
void
anonymize_settings_init(void)
{
	settings_define_workers();
	settings_define_identity();
	settings_define_run();
	settings_define_pace();
	settings_define_retention();
	MarkGUCPrefixReserved("anonymize");
}

/*
 * anonymize.timezone, or else the server's TimeZone: its value from the
 * configuration, not a session's SET, so that a session (preview(), the
 * page's "today") and the background run agree.
 */
pg_tz *
anonymize_tz(void)
{
	const char *name = anonymize_timezone_name;
	pg_tz	   *tz;

	if (name == NULL || name[0] == '\0')
		name = GetConfigOptionResetString("TimeZone");
	if (name != NULL && name[0] != '\0' && (tz = pg_tzset(name)) != NULL)
		return tz;
	return session_timezone;
}

/* Today's date in anonymize_tz(). */
DateADT
anonymize_today(void)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;

	if (timestamp2tm(GetCurrentTransactionStartTimestamp(), &tzoff, &tm,
					 &fsec, NULL, anonymize_tz()) != 0)
		elog(ERROR, "current time out of range");
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/* anonymize.run_at as minutes after midnight. */
int
anonymize_run_at_minutes(void)
{
	int			m = settings_parse_run_at(anonymize_run_at ? anonymize_run_at : "02:00");

	return m < 0 ? 120 : m;
}

/* The first instant after date d ends in anonymize_tz(). */
TimestampTz
anonymize_date_end(DateADT d)
{
	struct pg_tm tm;
	TimestampTz result;
	int			tzoff;

	if (DATE_NOT_FINITE(d))
		return DATE_IS_NOBEGIN(d) ? DT_NOBEGIN : DT_NOEND;

	memset(&tm, 0, sizeof(tm));
	j2date(d + 1 + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tzoff = DetermineTimeZoneOffset(&tm, anonymize_tz());
	if (tm2timestamp(&tm, 0, &tzoff, &result) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("date out of range for a timestamp")));
	return result;
}

/*
 * The names of anonymize.database-style text (palloc'd, in order, without
 * duplicates), and *all set when it is "*".  NIL and *all false when the
 * text is not a valid list.
 */
List *
anonymize_database_parse(const char *value, bool *all)
{
	char	   *raw = pstrdup(value);
	List	   *parts = NIL;
	List	   *names = NIL;
	ListCell   *lc;

	*all = false;
	if (!SplitGUCList(raw, ',', &parts) || parts == NIL)
		return NIL;
	if (list_length(parts) == 1 && strcmp((char *) linitial(parts), "*") == 0)
	{
		*all = true;
		return NIL;
	}
	foreach(lc, parts)
	{
		char	   *name = (char *) lfirst(lc);

		if (name[0] == '\0' || strcmp(name, "*") == 0 ||
			strlen(name) >= NAMEDATALEN)
		{
			list_free_deep(names);
			return NIL;
		}
		if (!list_member(names, makeString(name)))
			names = lappend(names, makeString(pstrdup(name)));
	}
	list_free(parts);
	pfree(raw);
	return names;
}

/*
 * Whether anonymize.database serves the database of that name (NULL: any
 * database with the extension, that is "*"), parsed in a memory context
 * of its own, so that a worker's loop leaks nothing.
 */
static bool
settings_database_check(const char *dbname)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "anonymize.database",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	bool		all;
	List	   *names = anonymize_database_parse(anonymize_database, &all);
	bool		served = all;

	if (!all && dbname != NULL)
		served = list_member(names, makeString(pstrdup(dbname)));
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return served;
}

/* whether anonymize.database serves the database of that name */
bool
anonymize_database_serves(const char *dbname)
{
	return dbname != NULL && settings_database_check(dbname);
}

/* whether anonymize.database is "*" */
bool
anonymize_database_all(void)
{
	return settings_database_check(NULL);
}
