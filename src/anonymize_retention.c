/*-------------------------------------------------------------------------
 *
 * anonymize_retention.c
 *	  Retention, as the platform this extension replaces does it:
 *
 *	  - anonymize._purge_requests(): Done requests whose done_at is older
 *		than anonymize.request_retention (default 12 months) leave the page,
 *		with their receipts in anonymize.request_log; cancelled requests'
 *		receipts go the same way once the cancellation is that old.  What
 *		stays is a per-day count in anonymize.request_log_daily: requests
 *		done and cancelled, rows anonymized, rows per target column.  No id,
 *		no identifier, no comment.  Waiting, Running, Held and Failed
 *		requests are never purged: they are unfinished work.
 *
 *	  - anonymize._sms_survey_retention(): in every sms_survey target, the
 *		identifier of rows whose time column is older than
 *		anonymize.sms_survey_retention (empty: off) becomes
 *		anonymize.replacement, anonymize.batch_size rows per statement.
 *
 * Both run in the caller's transaction.  The run calls them after its
 * requests through anonymize_retention_run(), each in a transaction of its
 * own, and vacuums the tables whose answers were rewritten.  What they did
 * is written to anonymize.retention_log (counts only) and to the server log
 * (counts and table names only).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "anonymize_request.h"
#include "anonymize_retention.h"
#include "anonymize_settings.h"
#include "anonymize_xact.h"

PG_FUNCTION_INFO_V1(anonymize_purge_requests_sql);
PG_FUNCTION_INFO_V1(anonymize_sms_survey_retention_sql);

char	   *anonymize_request_retention = NULL;
char	   *anonymize_sms_survey_retention = NULL;

/*
 * Parse an interval as interval_in does, but without raising: GUC check
 * hooks must report through GUC_check_errdetail.
 */
static bool
retention_parse_interval(const char *str, Interval *result)
{
	char		workbuf[256];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype = 0;
	struct pg_itm_in itm_in;
	char	   *copy;
	int			dterr;

	memset(&itm_in, 0, sizeof(itm_in));
	dterr = ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype,
						  MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype,
							   &itm_in);
	if (dterr == DTERR_BAD_FORMAT)
	{
		copy = pstrdup(str);
		memset(&itm_in, 0, sizeof(itm_in));
		dterr = DecodeISO8601Interval(copy, &dtype, &itm_in);
		pfree(copy);
	}
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	return itmin2interval(&itm_in, result) == 0;
}

/* GUC check hook of both retention settings: empty or a positive interval. */
bool
anonymize_check_retention(char **newval, void **extra, GucSource source)
{
	Interval	iv;

	if ((*newval)[0] == '\0')
		return true;
	if (!retention_parse_interval(*newval, &iv))
	{
		GUC_check_errdetail("A retention is an interval such as '12 months' or '120 days', or empty for never.");
		return false;
	}
	if (iv.month < 0 || iv.day < 0 || iv.time < 0 ||
		(iv.month == 0 && iv.day == 0 && iv.time == 0))
	{
		GUC_check_errdetail("A retention must be longer than zero, with no negative part.");
		return false;
	}
	return true;
}

/* The name of anonymize.timezone, or of the session's TimeZone. */
static const char *
retention_tz_name(void)
{
	if (anonymize_timezone_name && anonymize_timezone_name[0] != '\0')
		return anonymize_timezone_name;
	return pg_get_timezone_name(session_timezone);
}

/* A row of anonymize.retention_log. */
static void
retention_log(const char *kind, const char *target, const char *col,
			  Datum cutoff, int64 rows, const char *detail)
{
	Oid			argtypes[6] = {TEXTOID, TEXTOID, NAMEOID, TIMESTAMPTZOID, INT8OID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', target ? ' ' : 'n', col ? ' ' : 'n', ' ', ' ', detail ? ' ' : 'n'};

	values[0] = CStringGetTextDatum(kind);
	values[1] = target ? CStringGetTextDatum(target) : (Datum) 0;
	values[2] = col ? DirectFunctionCall1(namein, CStringGetDatum(col)) : (Datum) 0;
	values[3] = cutoff;
	values[4] = Int64GetDatum(rows);
	values[5] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	if (SPI_execute_with_args("INSERT INTO anonymize.retention_log "
							  "(kind, target, col, cutoff, rows, detail) "
							  "VALUES ($1, $2, $3, $4, $5, $6)",
							  6, argtypes, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write anonymize.retention_log");
}

/* now() - retention, as a timestamptz datum */
static Datum
retention_cutoff(const char *retention)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(retention)};
	bool		isnull;

	if (SPI_execute_with_args("SELECT pg_catalog.now() - $1::interval",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not compute the retention cutoff");
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/*
 * One statement: delete old Done requests and their receipts, and the
 * receipts of old cancellations; add their counts to the day they were done
 * or cancelled (in anonymize.timezone).  Returns done, cancelled, receipts.
 * Data-modifying CTEs all see the snapshot from before the statement, so a
 * Done request deleted here is never mistaken for a cancelled one.
 */
static const char *const retention_purge_sql =
"WITH done AS ("
"  DELETE FROM anonymize.anonymize_request r"
"  WHERE r.status = 'Done' AND r.done_at < $1"
"  RETURNING r.id, (r.done_at AT TIME ZONE $2)::date AS day,"
"            coalesce(r.rows_anonymized, 0) AS rows_anonymized"
"), cancelled AS ("
"  SELECT l.request_id AS id, (max(l.logged_at) AT TIME ZONE $2)::date AS day"
"  FROM anonymize.request_log l"
"  WHERE NOT EXISTS (SELECT FROM anonymize.anonymize_request r WHERE r.id = l.request_id)"
"  GROUP BY l.request_id"
"  HAVING bool_or(l.event = 'cancelled') AND max(l.logged_at) < $1"
"), receipts AS ("
"  DELETE FROM anonymize.request_log l"
"  WHERE l.request_id IN (SELECT id FROM done UNION ALL SELECT id FROM cancelled)"
"  RETURNING l.request_id, l.event, l.target, l.col, l.rows"
"), per_target AS ("
"  SELECT t.day, jsonb_object_agg(t.key, t.rows) AS rows_by_target"
"  FROM (SELECT d.day, r.target || '.' || r.col AS key, sum(r.rows)::bigint AS rows"
"        FROM receipts r JOIN done d ON d.id = r.request_id"
"        WHERE r.event = 'rewrite' GROUP BY 1, 2) t"
"  GROUP BY t.day"
"), per_day AS ("
"  SELECT u.day, sum(u.done)::bigint AS done, sum(u.cancelled)::bigint AS cancelled,"
"         sum(u.rows)::bigint AS rows"
"  FROM (SELECT day, 1 AS done, 0 AS cancelled, rows_anonymized AS rows FROM done"
"        UNION ALL SELECT day, 0, 1, 0 FROM cancelled) u"
"  GROUP BY u.day"
"), saved AS ("
"  INSERT INTO anonymize.request_log_daily AS k"
"    (day, requests_done, requests_cancelled, rows_anonymized, rows_by_target)"
"  SELECT p.day, p.done, p.cancelled, p.rows, coalesce(t.rows_by_target, '{}')"
"  FROM per_day p LEFT JOIN per_target t USING (day)"
"  ON CONFLICT (day) DO UPDATE SET"
"    requests_done = k.requests_done + EXCLUDED.requests_done,"
"    requests_cancelled = k.requests_cancelled + EXCLUDED.requests_cancelled,"
"    rows_anonymized = k.rows_anonymized + EXCLUDED.rows_anonymized,"
"    rows_by_target = (SELECT coalesce(jsonb_object_agg(s.key, s.rows), '{}')"
"                      FROM (SELECT e.key, sum(e.value::bigint) AS rows"
"                            FROM (SELECT * FROM jsonb_each_text(k.rows_by_target)"
"                                  UNION ALL"
"                                  SELECT * FROM jsonb_each_text(EXCLUDED.rows_by_target)) e"
"                            GROUP BY e.key) s),"
"    purged_at = pg_catalog.now()"
"  RETURNING 1"
")"
"SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM cancelled),"
"       (SELECT count(*) FROM saved)";

/* Purge requests done (or cancelled) longer than anonymize.request_retention ago. */
int64
anonymize_purge_requests(void)
{
	Oid			argtypes[2] = {TIMESTAMPTZOID, TEXTOID};
	Datum		values[2];
	int64		done = 0,
				cancelled = 0;
	bool		isnull;

	if (anonymize_request_retention == NULL || anonymize_request_retention[0] == '\0')
		return 0;

	SPI_connect();
	values[0] = retention_cutoff(anonymize_request_retention);
	values[1] = CStringGetTextDatum(retention_tz_name());

	/* the page's trigger lets only the extension's own code delete Done rows */
	anonymize_internal_write_begin();
	PG_TRY();
	{
		if (SPI_execute_with_args(retention_purge_sql, 2, argtypes, values, NULL,
								  false, 0) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not purge anonymize requests");
	}
	PG_FINALLY();
	{
		anonymize_internal_write_end();
	}
	PG_END_TRY();

	done = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cancelled = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

	if (done + cancelled > 0)
	{
		char		detail[128];

		snprintf(detail, sizeof(detail), "%lld done, %lld cancelled",
				 (long long) done, (long long) cancelled);
		retention_log("requests", NULL, NULL, values[0], done + cancelled, detail);
		ereport(LOG,
				(errhidestmt(true),
				 errmsg("anonymize: purged %lld done and %lld cancelled requests older than %s",
						(long long) done, (long long) cancelled,
						anonymize_request_retention)));
	}
	SPI_finish();
	return done + cancelled;
}

/* a leaf table of an sms_survey target, and the target it belongs to */
typedef struct RetentionLeaf
{
	Oid			relid;			/* the leaf */
	char	   *target;			/* the registered table, as regclass text */
	char	   *leaf;			/* schema-qualified, quoted leaf table */
	char	   *col;
	char	   *time_col;
	bool		erase_null;		/* erase 'null': old answers become NULL */
	char	   *replacement;	/* else this, or anonymize.replacement */
} RetentionLeaf;

/*
 * Every table of every sms_survey target that holds rows (leaf
 * partitions, an inheritance parent and its children), in cxt, ordered by
 * target and column.
 */
static RetentionLeaf *
retention_sms_leaves(MemoryContext cxt, int *nleaves)
{
	RetentionLeaf *leaves;

	if (SPI_execute("SELECT l.rel::oid, t.tbl::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname),"
					" t.col::text, t.time_col::text,"
					" coalesce(pg_catalog.to_jsonb(t) ->> 'erase', 'replace') = 'null',"
					" pg_catalog.to_jsonb(t) ->> 'replacement'"
					" FROM anonymize.target t,"
					" LATERAL (WITH RECURSIVE tree(rel) AS (SELECT t.tbl::oid UNION"
					"  SELECT i.inhrelid FROM tree JOIN pg_catalog.pg_inherits i"
					"  ON i.inhparent = tree.rel) SELECT rel FROM tree) l"
					" JOIN pg_catalog.pg_class c ON c.oid = l.rel"
					" JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
					" WHERE t.scope = 'sms_survey' AND c.relkind = 'r'"
					" ORDER BY t.tbl::text, t.col, 3",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the sms_survey targets");
	*nleaves = (int) SPI_processed;
	leaves = MemoryContextAlloc(cxt, sizeof(RetentionLeaf) * Max(*nleaves, 1));
	for (int i = 0; i < *nleaves; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		leaves[i].relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		leaves[i].target = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 2));
		leaves[i].leaf = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 3));
		leaves[i].col = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 4));
		leaves[i].time_col = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 5));
		leaves[i].erase_null = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		leaves[i].replacement = SPI_getvalue(tup, desc, 7);
		if (leaves[i].replacement != NULL)
			leaves[i].replacement = MemoryContextStrdup(cxt, leaves[i].replacement);
	}
	SPI_freetuptable(SPI_tuptable);
	return leaves;
}

/*
 * Anonymize the old answers of one leaf, batch_size rows a statement;
 * returns how many.
 */
static int64
retention_sms_leaf(const RetentionLeaf *leaf, Datum cutoff)
{
	const char *col = quote_identifier(leaf->col);
	char	   *sql;
	SPIPlanPtr	plan;
	Oid			argtypes[3] = {TEXTOID, TIMESTAMPTZOID, INT4OID};
	Datum		values[3];
	int64		rows = 0;
	char	   *role;

	/*
	 * One batch: the first batch_size rows still to do, found by ctid in
	 * this table only (a ctid is unique within one table); with the
	 * target's erase and replacement, firing no ordinary trigger, as the
	 * run does (doc/run-writes.md).
	 */
	if (leaf->erase_null)
		sql = psprintf("UPDATE ONLY %s SET %s = NULL WHERE ctid = ANY (ARRAY("
					   "SELECT ctid FROM ONLY %s WHERE %s < $2 AND %s IS NOT NULL"
					   " LIMIT $3))",
					   leaf->leaf, col, leaf->leaf,
					   quote_identifier(leaf->time_col), col);
	else
		sql = psprintf("UPDATE ONLY %s SET %s = $1 WHERE ctid = ANY (ARRAY("
					   "SELECT ctid FROM ONLY %s WHERE %s < $2 AND %s IS NOT NULL"
					   " AND %s::text <> $1 AND %s::text <> '' LIMIT $3))",
					   leaf->leaf, col, leaf->leaf,
					   quote_identifier(leaf->time_col), col, col, col);
	role = pstrdup(GetConfigOption("session_replication_role", false, false));
	(void) set_config_option("session_replication_role", "replica",
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true,
							 0, false);
	plan = SPI_prepare(sql, 3, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare the sms survey retention of %s: %s",
			 leaf->leaf, SPI_result_code_string(SPI_result));
	values[0] = CStringGetTextDatum(leaf->replacement ? leaf->replacement :
									anonymize_replacement);
	values[1] = cutoff;
	values[2] = Int32GetDatum(anonymize_batch_size);

	for (;;)
	{
		uint64		n;

		CHECK_FOR_INTERRUPTS();
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not anonymize old answers in %s", leaf->leaf);
		n = SPI_processed;
		rows += n;
		if (n < (uint64) anonymize_batch_size)
			break;
	}
	SPI_freeplan(plan);
	pfree(sql);
	(void) set_config_option("session_replication_role", role,
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true,
							 0, false);
	pfree(role);
	return rows;
}

/* Record what the retention did in a target column: retention_log, server log. */
static void
retention_sms_record(const RetentionLeaf *leaf, Datum cutoff, int64 rows)
{
	if (rows == 0)
		return;
	retention_log("sms_survey", leaf->target, leaf->col, cutoff, rows, NULL);
	ereport(LOG,
			(errhidestmt(true),
			 errmsg("anonymize: anonymized %lld SMS survey answers older than %s in %s",
					(long long) rows, anonymize_sms_survey_retention,
					leaf->target)));
}

/* Is leaves[i] the last leaf of its target column? */
static bool
retention_sms_last_of_target(const RetentionLeaf *leaves, int nleaves, int i)
{
	return i + 1 == nleaves ||
		strcmp(leaves[i + 1].target, leaves[i].target) != 0 ||
		strcmp(leaves[i + 1].col, leaves[i].col) != 0;
}

/* Anonymize SMS-survey answers older than anonymize.sms_survey_retention. */
int64
anonymize_sms_survey_retention_execute(List **touched)
{
	MemoryContext callercxt = CurrentMemoryContext;
	RetentionLeaf *leaves;
	int			nleaves;
	Datum		cutoff;
	int64		total = 0;
	int64		target_rows = 0;

	if (anonymize_sms_survey_retention == NULL || anonymize_sms_survey_retention[0] == '\0')
		return 0;

	SPI_connect();
	cutoff = retention_cutoff(anonymize_sms_survey_retention);
	leaves = retention_sms_leaves(callercxt, &nleaves);
	for (int i = 0; i < nleaves; i++)
	{
		int64		leaf_rows = retention_sms_leaf(&leaves[i], cutoff);

		target_rows += leaf_rows;
		if (leaf_rows > 0 && touched != NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(callercxt);

			*touched = list_append_unique_oid(*touched, leaves[i].relid);
			MemoryContextSwitchTo(old);
		}

		/* the last leaf of a target column: record the target's count */
		if (retention_sms_last_of_target(leaves, nleaves, i))
		{
			retention_sms_record(&leaves[i], cutoff, target_rows);
			total += target_rows;
			target_rows = 0;
		}
	}
	SPI_finish();
	return total;
}

/* anonymize._purge_requests() returns bigint */
Datum
anonymize_purge_requests_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(anonymize_purge_requests());
}

/* anonymize._sms_survey_retention() returns bigint */
Datum
anonymize_sms_survey_retention_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(anonymize_sms_survey_retention_execute(NULL));
}

/*
 * One part of retention in a transaction of its own; an error is logged
 * (its message only: a detail could quote a row) and the run goes on, its
 * requests being done already.
 */
static void
retention_step(bool purge, const char *what, const char *retention,
			   List **touched, MemoryContext cxt)
{
	char		activity[256];

	if (retention == NULL || retention[0] == '\0')
		return;
	snprintf(activity, sizeof(activity), "anonymize run: retention: %s older than %s",
			 what, retention);
	pgstat_report_activity(STATE_RUNNING, activity);

	PG_TRY();
	{
		anonymize_xact_begin();
		if (purge)
			(void) anonymize_purge_requests();
		else
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			(void) anonymize_sms_survey_retention_execute(touched);
			MemoryContextSwitchTo(old);
		}
		anonymize_xact_commit();
	}
	PG_CATCH();
	{
		snprintf(activity, sizeof(activity), "retention of %s", what);
		anonymize_xact_abort_and_log(cxt, activity);
	}
	PG_END_TRY();
}

/* Both parts of retention, each in a transaction of its own. */
void
anonymize_retention_run(List **touched, MemoryContext cxt)
{
	retention_step(true, "requests", anonymize_request_retention, NULL, cxt);
	retention_step(false, "SMS survey answers", anonymize_sms_survey_retention, touched, cxt);
}
