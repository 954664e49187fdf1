/*-------------------------------------------------------------------------
 *
 * anonymize_settings.h
 *	  The anonymize.* configuration settings (GUCs) and helpers that read
 *	  them: the time zone and "today" of the solution.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_SETTINGS_H
#define ANONYMIZE_SETTINGS_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "pgtime.h"
#include "utils/date.h"

extern char *anonymize_database;
extern char *anonymize_country_code;
extern char *anonymize_trunk_prefix;
extern char *anonymize_timezone_name;
extern char *anonymize_run_at;
extern char *anonymize_replacement;
extern int	anonymize_batch_size;
extern int	anonymize_rescan_interval;
extern int	anonymize_batch_delay;
extern double anonymize_cost_delay;
extern int	anonymize_cost_limit;
extern int	anonymize_run_nice;
extern int	anonymize_process_nice;
extern int	anonymize_max_parallel_workers;
extern int	anonymize_parallel_min_table_size;
extern int	anonymize_parallel_rewrite_min_rows;

/* the throttle's defaults (see doc/settings.md for the measurement) */
#define ANONYMIZE_COST_DELAY_DEFAULT	2.0
#define ANONYMIZE_COST_LIMIT_DEFAULT	200
#define ANONYMIZE_RUN_NICE_DEFAULT	10
extern bool anonymize_refresh_materialized_views;
extern bool anonymize_rebuild_indexes;
extern int	anonymize_max_rows_per_request;
extern bool anonymize_enabled;

extern void anonymize_settings_init(void);

/*
 * The database names of an anonymize.database value (a List of String
 * nodes), or NIL with *all set for "*"; NIL with *all false when invalid.
 */
extern List *anonymize_database_parse(const char *value, bool *all);

/* whether anonymize.database serves the database of that name */
extern bool anonymize_database_serves(const char *dbname);

/* whether anonymize.database is "*" */
extern bool anonymize_database_all(void);

/* anonymize.timezone, or the server's configured TimeZone when it is empty */
extern pg_tz *anonymize_tz(void);

/* today's date in anonymize_tz() */
extern DateADT anonymize_today(void);

/* minutes after midnight of anonymize.run_at */
extern int	anonymize_run_at_minutes(void);

/*
 * The first instant after the date d ends in anonymize_tz(): rows whose
 * timestamptz is before this fall on or before d.
 */
extern TimestampTz anonymize_date_end(DateADT d);

#endif							/* ANONYMIZE_SETTINGS_H */
