/*-------------------------------------------------------------------------
 *
 * anonymize_run.c
 *	  The erasure run: takes the run lock, marks due requests Running, makes
 *	  one pass over each target, holds requests over the row limit,
 *	  rewrites matching rows in batches (one transaction each, with their
 *	  receipts), finishes the requests, records the run in
 *	  anonymize.run_log and vacuums what it touched.
 *
 * Called in a background process outside any transaction (see
 * anonymize_run.h).  A run killed anywhere leaves its requests Running;
 * the next run picks them up and rescans: rows already rewritten no longer
 * match, and the receipts, committed with the batches, stay exact.
 *
 * Nothing here writes an identifier to the log, an error or
 * pg_stat_activity: only request ids, table names and counts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/vacuum.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "anonymize_digest.h"
#include "anonymize_engine.h"
#include "anonymize_request.h"
#include "anonymize_retention.h"
#include "anonymize_run.h"
#include "anonymize_scrub.h"
#include "anonymize_settings.h"

/* a matching row found by a scan, to be rewritten */
typedef struct RunMatch
{
	int32		target;			/* index into RunState.targets */
	int32		req;			/* index into RunState.reqs */
	Oid			leaf;
	ItemPointerData tid;
} RunMatch;

typedef struct RunState
{
	MemoryContext cxt;
	int64		run_id;
	const char *trigger;
	AnonymizeRunResult *result;

	AnonymizeRequest *reqs;
	int			nreqs;
	bool	   *resumed;		/* Running already when this run began */
	bool	   *prior;			/* had 'rewrite' receipts when this run began */

	AnonymizeTarget *targets;	/* every target processed so far */
	int			ntargets;
	int			maxtargets;
	/* what this run's committed batches rewrote, for the receipts */
	int64	   *rewritten;		/* [request]: rows, all targets */
	uint8	  **trows;			/* [target]: bit per request, some rows */

	/* matches of the current pass */
	RunMatch   *matches;
	int64		nmatches;
	int64		maxmatches;
	bool		overflow;
	bool		counting;

	List	   *touched;		/* leaf OIDs rewritten, to vacuum */
	List	   *scanned_leaves; /* leaf OIDs scanned */
	bool		vacuum_owed;	/* an earlier run never finished its vacuum */
} RunState;

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

static void
run_begin_xact(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
run_commit_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static void
run_exec(const char *sql, int nargs, Oid *types, Datum *values,
		 const char *nulls, int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls,
											false, 0);

	if (ret != expected)
		elog(ERROR, "anonymize run: unexpected SPI result %d", ret);
}

static void
run_activity(RunState *st, const char *fmt,...) pg_attribute_printf(2, 3);

static void
run_activity(RunState *st, const char *fmt,...)
{
	StringInfoData buf;
	va_list		args;

	initStringInfo(&buf);
	appendStringInfo(&buf, "anonymize run %lld: ", (long long) st->run_id);
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	pgstat_report_activity(STATE_RUNNING, buf.data);
	pfree(buf.data);
}

/* "3, 4, 7" for at most 10 request ids, then "..." */
static char *
request_ids(RunState *st, const int *idx, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
	{
		if (i == 10)
		{
			appendStringInfo(&buf, ", ... (%d requests)", n);
			break;
		}
		appendStringInfo(&buf, "%s%lld", i ? ", " : "",
						 (long long) st->reqs[idx[i]].id);
	}
	return buf.data;
}

static ArrayType *
int8_array(const int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	return construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

static void
run_lock(bool acquire)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, ANONYMIZE_RUN_LOCK_KEY1,
						 ANONYMIZE_RUN_LOCK_KEY2, 2);
	if (acquire)
		(void) LockAcquire(&tag, ExclusiveLock, true, false);
	else
		LockRelease(&tag, ExclusiveLock, true);
}

/*
 * Writes of the run to the page.  The page's row trigger only lets them
 * through and invalidates the page's relcache entry (for the search
 * hook's cache); firing it per row costs more than the rest of the write
 * for thousands of requests, so the run skips it (session_replication_role
 * = replica, for this transaction) and invalidates once itself.
 */
static void
run_page_write_begin(void)
{
	anonymize_internal_write_begin();
	run_exec("SET LOCAL session_replication_role = replica", 0, NULL, NULL,
			 NULL, SPI_OK_UTILITY);
}

static void
run_page_write_end(void)
{
	Oid			page = get_relname_relid("anonymize_request",
										 get_namespace_oid("anonymize", false));

	run_exec("SET LOCAL session_replication_role = origin", 0, NULL, NULL,
			 NULL, SPI_OK_UTILITY);
	if (OidIsValid(page))
		CacheInvalidateRelcacheByRelid(page);
	anonymize_internal_write_end();
}

/* ---------------------------------------------------------------------
 * Start: run_log, due requests
 * ---------------------------------------------------------------------
 */

static void
run_start(RunState *st)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;

	values[0] = CStringGetTextDatum(st->trigger);
	run_begin_xact();
	/* we hold the run lock: a run still 'running' died */
	run_exec("UPDATE anonymize.run_log SET outcome = 'interrupted' "
			 "WHERE outcome = 'running'", 0, NULL, NULL, NULL, SPI_OK_UPDATE);

	/*
	 * A run killed or failed before its vacuum ended may have left dead
	 * versions of rewritten rows, even with all its requests Done (killed
	 * in the vacuum itself): this run vacuums every target then.
	 */
	run_exec("SELECT EXISTS (SELECT FROM anonymize.run_log WHERE vacuumed_at IS NULL)",
			 0, NULL, NULL, NULL, SPI_OK_SELECT);
	st->vacuum_owed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1,
												 &isnull));
	run_exec("INSERT INTO anonymize.run_log (trigger) VALUES ($1) RETURNING id",
			 1, types, values, NULL, SPI_OK_INSERT_RETURNING);
	st->run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1,
											 &isnull));
	run_commit_xact();
}

/*
 * Mark the due requests Running (Waiting ones, and Held ones that were
 * confirmed) and load every Running request, including those a killed run
 * left behind.  A portal edit of a Waiting request that commits before
 * this statement reaches its row is seen; after, the row is Running and
 * the portal gets 55000.
 */
static void
run_load_requests(RunState *st)
{
	MemoryContext old;
	int64	   *failed;
	int			nfailed = 0;
	Datum		resumed;
	bool		isnull;

	run_begin_xact();
	run_page_write_begin();
	/* what a killed or failed run left Running */
	run_exec("SELECT coalesce(array_agg(id), '{}') FROM anonymize.anonymize_request"
			 " WHERE status = 'Running'",
			 0, NULL, NULL, NULL, SPI_OK_SELECT);
	resumed = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
							&isnull);
	run_exec("WITH due AS ("
			 " UPDATE anonymize.anonymize_request r SET status = 'Running'"
			 " WHERE r.status = 'Waiting'"
			 "  OR (r.status = 'Held' AND EXISTS (SELECT FROM anonymize.request_private p"
			 "      WHERE p.request_id = r.id AND p.confirmed_at IS NOT NULL))"
			 " RETURNING r.id)"
			 " INSERT INTO anonymize.request_log (request_id, event, status)"
			 " SELECT id, 'status', 'Running' FROM due",
			 0, NULL, NULL, NULL, SPI_OK_INSERT);
	/*
	 * Column 10: receipts from before this run (a probe of request_log's
	 * index per request, never a hash of the whole log).
	 */
	run_exec("SELECT r.id, r.phone, r.email, r.to_date, r.archive, r.sms_survey,"
			 " r.raw_data, coalesce(p.confirmed_at IS NOT NULL, false),"
			 " r.id = ANY ($1),"
			 " (SELECT 1 FROM anonymize.request_log l"
			 "  WHERE l.request_id = r.id AND l.event = 'rewrite' LIMIT 1) IS NOT NULL"
			 " FROM anonymize.anonymize_request r"
			 " LEFT JOIN anonymize.request_private p ON p.request_id = r.id"
			 " WHERE r.status = 'Running' ORDER BY r.id",
			 1, (Oid[]) {INT8ARRAYOID}, &resumed, NULL, SPI_OK_SELECT);

	old = MemoryContextSwitchTo(st->cxt);
	st->nreqs = SPI_processed;
	st->reqs = palloc0(sizeof(AnonymizeRequest) * Max(st->nreqs, 1));
	st->resumed = palloc0(sizeof(bool) * Max(st->nreqs, 1));
	st->prior = palloc0(sizeof(bool) * Max(st->nreqs, 1));
	st->rewritten = palloc0(sizeof(int64) * Max(st->nreqs, 1));
	failed = palloc(sizeof(int64) * Max(st->nreqs, 1));
	for (int i = 0; i < st->nreqs; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		AnonymizeRequest *r = &st->reqs[i];
		char	   *phone = anonymize_spi_text(i, 2);
		char	   *email = anonymize_spi_text(i, 3);

		r->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		r->scope[ANONYMIZE_SCOPE_ARCHIVE] = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		r->scope[ANONYMIZE_SCOPE_SMS_SURVEY] = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		r->scope[ANONYMIZE_SCOPE_RAW_DATA] = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull));
		r->confirmed = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
		st->resumed[i] = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
		st->prior[i] = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
		r->active = anonymize_request_prepare(r, phone, email,
											  DatumGetDateADT(SPI_getbinval(tup, desc, 4, &isnull)));
		if (!r->active)
			failed[nfailed++] = r->id;
		/* the plaintext is not kept beyond its canonical form */
		if (phone)
			pfree(phone);
		if (email)
			pfree(email);
	}
	MemoryContextSwitchTo(old);

	if (nfailed > 0)
	{
		Datum		values[1] = {PointerGetDatum(int8_array(failed, nfailed))};

		run_exec("WITH f AS ("
				 " UPDATE anonymize.anonymize_request SET status = 'Failed',"
				 "  error = 'the phone number or email is not valid under the current settings'"
				 " WHERE id = ANY ($1) RETURNING id)"
				 " INSERT INTO anonymize.request_log (request_id, event, status)"
				 " SELECT id, 'status', 'Failed' FROM f",
				 1, (Oid[]) {INT8ARRAYOID}, values, NULL, SPI_OK_INSERT);
		st->result->requests_failed += nfailed;
	}
	run_page_write_end();
	run_commit_xact();
	pfree(failed);
	anonymize_engine_set_recheck(st->reqs, st->nreqs);
}

/* ---------------------------------------------------------------------
 * Targets
 * ---------------------------------------------------------------------
 */

static bool
target_known(RunState *st, Oid relid, const char *col)
{
	for (int i = 0; i < st->ntargets; i++)
		if (st->targets[i].relid == relid && strcmp(st->targets[i].col, col) == 0)
			return true;
	return false;
}

static bool
scope_wanted(RunState *st, int scope)
{
	for (int i = 0; i < st->nreqs; i++)
		if (st->reqs[i].active && st->reqs[i].scope[scope])
			return true;
	return false;
}

/*
 * Append targets not processed yet, in a scope some active request ticks,
 * to st->targets; returns the index of the first new one.  Call inside a
 * transaction with SPI connected.
 */
static int
run_new_targets(RunState *st)
{
	int			first = st->ntargets;
	MemoryContext old;

	run_exec(ANONYMIZE_TARGETS_SQL, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(st->cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc,
														   1, &isnull));
		char	   *col = anonymize_spi_text(i, 3);
		int			scope = anonymize_scope_number(anonymize_spi_text(i, 5));
		AnonymizeTarget *t;

		if (target_known(st, relid, col) || !scope_wanted(st, scope))
			continue;
		if (st->ntargets == st->maxtargets)
		{
			st->maxtargets = Max(8, st->maxtargets * 2);
			st->targets = st->targets
				? repalloc(st->targets, sizeof(AnonymizeTarget) * st->maxtargets)
				: palloc(sizeof(AnonymizeTarget) * st->maxtargets);
			st->trows = st->trows
				? repalloc(st->trows, sizeof(uint8 *) * st->maxtargets)
				: palloc(sizeof(uint8 *) * st->maxtargets);
		}
		st->trows[st->ntargets] = palloc0(st->nreqs / 8 + 1);
		t = &st->targets[st->ntargets++];
		t->relid = relid;
		t->name = anonymize_spi_text(i, 2);
		t->col = col;
		t->kind = anonymize_kind_bits(anonymize_spi_text(i, 4));
		t->scope = scope;
		t->time_col = anonymize_spi_text(i, 6);
		t->time_type = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
													  SPI_tuptable->tupdesc,
													  7, &isnull));
	}
	MemoryContextSwitchTo(old);
	return first;
}

/* ---------------------------------------------------------------------
 * Scanning
 * ---------------------------------------------------------------------
 */

typedef struct ScanArg
{
	RunState   *st;
	int			target;
} ScanArg;

static void
run_match(void *arg, Oid leaf, ItemPointer tid, const int *reqs, int nreqs)
{
	ScanArg    *sa = (ScanArg *) arg;
	RunState   *st = sa->st;
	RunMatch   *m;

	if (st->counting)
		for (int i = 0; i < nreqs; i++)
			st->reqs[reqs[i]].matched++;
	if (st->nmatches >= st->maxmatches)
	{
		int64		limit = (int64) maintenance_work_mem * 1024 / sizeof(RunMatch);

		if (st->maxmatches >= limit)
		{
			st->overflow = true;	/* another pass picks up the rest */
			return;
		}
		st->maxmatches = Min(Max(st->maxmatches * 2, 1024), limit);
		st->matches = st->matches
			? repalloc_huge(st->matches, sizeof(RunMatch) * st->maxmatches)
			: MemoryContextAllocHuge(st->cxt, sizeof(RunMatch) * st->maxmatches);
	}
	m = &st->matches[st->nmatches++];
	m->target = sa->target;
	m->req = reqs[0];			/* the row counts for the lowest id */
	m->leaf = leaf;
	m->tid = *tid;
}

static void
run_scan_targets(RunState *st, int first)
{
	st->nmatches = 0;
	st->overflow = false;
	for (int t = first; t < st->ntargets; t++)
	{
		AnonymizeTarget *target = &st->targets[t];
		AnonymizeMatchSet *ms;
		List	   *leaves;
		ListCell   *lc;
		ScanArg		sa = {st, t};

		ms = anonymize_matchset_build(st->reqs, st->nreqs, target->kind,
									  target->scope);
		if (anonymize_matchset_size(ms) == 0)
		{
			anonymize_matchset_free(ms);
			continue;
		}
		run_begin_xact();
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			leaves = anonymize_target_leaves(target->relid);
			MemoryContextSwitchTo(old);
		}
		run_commit_xact();

		foreach(lc, leaves)
		{
			Oid			leafid = lfirst_oid(lc);
			Relation	rel;

			run_begin_xact();
			rel = try_table_open(leafid, AccessShareLock);
			if (rel != NULL && !anonymize_leaf_may_match(ms, target, rel))
			{
				/* a partition of later times: nothing in it is due */
				table_close(rel, AccessShareLock);
				rel = NULL;
			}
			if (rel != NULL)
			{
				run_activity(st, "scanning %s (%s, %ld pages) for %d identifiers",
							 target->name, RelationGetRelationName(rel),
							 (long) RelationGetNumberOfBlocks(rel),
							 anonymize_matchset_size(ms));
				anonymize_engine_scan(ms, target, rel, run_match, &sa);
				table_close(rel, AccessShareLock);
				if (!list_member_oid(st->scanned_leaves, leafid))
				{
					MemoryContext old = MemoryContextSwitchTo(st->cxt);

					st->scanned_leaves = lappend_oid(st->scanned_leaves, leafid);
					MemoryContextSwitchTo(old);
				}
			}
			run_commit_xact();
		}
		anonymize_matchset_free(ms);
	}
}

/*
 * After the counting pass: requests over anonymize.max_rows_per_request
 * (and not confirmed) become Held, rewrite nothing, and drop out of the
 * run.  Returns whether any did.
 */
static bool
run_hold(RunState *st)
{
	bool		any = false;
	int			limit = anonymize_max_rows_per_request;

	if (limit <= 0)
		return false;
	for (int i = 0; i < st->nreqs; i++)
	{
		AnonymizeRequest *r = &st->reqs[i];
		Oid			types[2] = {INT8OID, TEXTOID};
		Datum		values[2];

		if (!r->active || r->confirmed || r->matched <= limit)
			continue;
		r->active = false;
		any = true;
		values[0] = Int64GetDatum(r->id);
		values[1] = CStringGetTextDatum(psprintf("would rewrite %lld rows, more than anonymize.max_rows_per_request (%d)",
												 (long long) r->matched, limit));
		run_begin_xact();
		run_page_write_begin();
		run_exec("WITH h AS ("
				 " UPDATE anonymize.anonymize_request SET status = 'Held', error = $2"
				 " WHERE id = $1 AND status = 'Running' RETURNING id)"
				 " INSERT INTO anonymize.request_log (request_id, event, status, detail)"
				 " SELECT id, 'status', 'Held', $2 FROM h",
				 2, types, values, NULL, SPI_OK_INSERT);
		run_page_write_end();
		run_commit_xact();
		st->result->requests_held++;
		ereport(LOG,
				(errmsg("anonymize run %lld: request %lld held: it would rewrite %lld rows, more than anonymize.max_rows_per_request (%d)",
						(long long) st->run_id, (long long) r->id,
						(long long) r->matched, limit)));
	}
	return any;
}

/* ---------------------------------------------------------------------
 * Rewriting
 * ---------------------------------------------------------------------
 */

static int
cmp_int(const void *a, const void *b)
{
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	return (x > y) - (x < y);
}

/*
 * Rewrite matches[from..to) (one target, one leaf) in one transaction,
 * with their receipts.
 */
static void
run_rewrite_batch(RunState *st, int64 from, int64 to, int64 done, int64 total)
{
	RunMatch   *first = &st->matches[from];
	AnonymizeTarget *target = &st->targets[first->target];
	int			n = to - from;
	Datum	   *tids = palloc(sizeof(Datum) * n);
	Datum	   *reqs = palloc(sizeof(Datum) * n);
	int		   *ids = palloc(sizeof(int) * n);
	int			nids = 0;
	char	   *leafname;
	char	   *sql;
	Oid			types[3] = {TEXTOID, TIDARRAYOID, INT4ARRAYOID};
	Datum		values[3];
	int64	   *rid;
	int64	   *rcount;
	int			nr = 0;

	for (int i = 0; i < n; i++)
	{
		tids[i] = PointerGetDatum(&st->matches[from + i].tid);
		reqs[i] = Int32GetDatum(st->matches[from + i].req);
		ids[i] = st->matches[from + i].req;
	}
	qsort(ids, n, sizeof(int), cmp_int);
	for (int i = 0; i < n; i++)
		if (i == 0 || ids[i] != ids[i - 1])
			ids[nids++] = ids[i];

	/* allocated outside the transaction, whose memory goes with it */
	rid = palloc(sizeof(int64) * nids);
	rcount = palloc0(sizeof(int64) * nids);

	run_begin_xact();
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(first->leaf)))
	{
		run_commit_xact();		/* dropped meanwhile: nothing to rewrite */
		pfree(tids);
		pfree(reqs);
		pfree(ids);
		pfree(rid);
		pfree(rcount);
		return;
	}
	leafname = quote_qualified_identifier(get_namespace_name(get_rel_namespace(first->leaf)),
										  get_rel_name(first->leaf));
	run_activity(st, "rewriting %s, rows %lld to %lld of %lld (requests %s)",
				 target->name, (long long) done + 1, (long long) done + n,
				 (long long) total, request_ids(st, ids, nids));

	/* a TID scan per row, never a whole-table plan */
	run_exec("SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off;"
			 " SET LOCAL enable_mergejoin = off",
			 0, NULL, NULL, NULL, SPI_OK_UTILITY);
	sql = psprintf("UPDATE ONLY %s AS t SET %s = $1"
				   " FROM unnest($2, $3) AS m(tid, req)"
				   " WHERE t.ctid = m.tid"
				   " AND anonymize._rewrite_recheck(t.%s::pg_catalog.text, m.req)"
				   " RETURNING m.req",
				   leafname, quote_identifier(target->col),
				   quote_identifier(target->col));
	/* the pages of the versions this batch leaves behind, for the scrub */
	anonymize_scrub_note_rows(first->leaf, target->col, tids, n);
	values[0] = CStringGetTextDatum(anonymize_replacement);
	values[1] = PointerGetDatum(construct_array(tids, n, TIDOID,
												sizeof(ItemPointerData), false,
												TYPALIGN_SHORT));
	values[2] = PointerGetDatum(construct_array(reqs, n, INT4OID, 4, true,
												TYPALIGN_INT));
	run_exec(sql, 3, types, values, NULL, SPI_OK_UPDATE_RETURNING);

	/* rows per request, for the receipts */
	for (int i = 0; i < nids; i++)
		rid[i] = st->reqs[ids[i]].id;
	nr = nids;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int			req = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													  SPI_tuptable->tupdesc, 1,
													  &isnull));
		int		   *pos = bsearch(&req, ids, nids, sizeof(int), cmp_int);

		if (pos)
			rcount[pos - ids]++;
	}
	st->result->rows_rewritten += SPI_processed;
	if (SPI_processed > 0)
	{
		Oid			rtypes[4] = {INT8ARRAYOID, INT8ARRAYOID, TEXTOID, TEXTOID};
		Datum		rvalues[4];

		rvalues[0] = PointerGetDatum(int8_array(rid, nr));
		rvalues[1] = PointerGetDatum(int8_array(rcount, nr));
		rvalues[2] = CStringGetTextDatum(target->name);
		rvalues[3] = CStringGetTextDatum(target->col);
		run_exec("INSERT INTO anonymize.request_log (request_id, event, target, col, rows)"
				 " SELECT r, 'rewrite', $3, $4, n FROM unnest($1, $2) AS u(r, n) WHERE n > 0"
				 " ON CONFLICT (request_id, target, col) WHERE event = 'rewrite'"
				 " DO UPDATE SET rows = anonymize.request_log.rows + EXCLUDED.rows,"
				 "  updated_at = pg_catalog.clock_timestamp()",
				 4, rtypes, rvalues, NULL, SPI_OK_INSERT);
	}
	run_commit_xact();

	/* committed with their receipts: the run's own count of them */
	for (int i = 0; i < nids; i++)
		if (rcount[i] > 0)
		{
			st->rewritten[ids[i]] += rcount[i];
			st->trows[first->target][ids[i] / 8] |= 1 << (ids[i] % 8);
		}

	if (!list_member_oid(st->touched, first->leaf))
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		st->touched = lappend_oid(st->touched, first->leaf);
		MemoryContextSwitchTo(old);
	}
	pfree(tids);
	pfree(reqs);
	pfree(ids);
	pfree(rid);
	pfree(rcount);
}

/*
 * anonymize.batch_delay: a pause between batches, so that the portal's
 * statements get the cores and the disk for a while.  Like
 * vacuum_delay_point(): interruptible, ends with the postmaster.
 */
static void
run_batch_pause(void)
{
	if (anonymize_batch_delay <= 0)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 anonymize_batch_delay, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

static void
run_rewrite(RunState *st)
{
	int64		i = 0;
	int			batch = Max(anonymize_batch_size, 1);

	while (i < st->nmatches)
	{
		int64		start = i;
		int64		end = i;
		int64		groupend;

		/* one (target, leaf) group */
		while (end < st->nmatches &&
			   st->matches[end].target == st->matches[start].target &&
			   st->matches[end].leaf == st->matches[start].leaf)
			end++;
		groupend = end;
		for (int64 b = start; b < groupend; b += batch)
		{
			CHECK_FOR_INTERRUPTS();
			if (b > 0)
				run_batch_pause();
			run_rewrite_batch(st, b, Min(b + batch, groupend), b - start,
							  groupend - start);
		}
		i = groupend;
	}
}

/*
 * Process the targets from index first on: count, hold, rewrite, and more
 * passes while the matches did not fit in memory.
 */
static void
run_targets(RunState *st, int first)
{
	st->counting = true;
	for (;;)
	{
		run_scan_targets(st, first);
		if (st->counting)
		{
			st->counting = false;
			if (run_hold(st))
				continue;		/* rescan without the held requests */
		}
		run_rewrite(st);
		if (!st->overflow)
			break;
	}
	st->nmatches = 0;
}

/* ---------------------------------------------------------------------
 * Finishing requests
 * ---------------------------------------------------------------------
 */

#define FINISH_CHUNK 1000

/*
 * Finish active requests: digests, zero receipts for the targets scanned
 * for them, the masked page row, Done.  Returns false, finishing nothing
 * more, when a target was added meanwhile: the caller scans it first.
 */
static bool
run_finish(RunState *st)
{
	int			i = 0;
	MemoryContext chunk = AllocSetContextCreate(st->cxt, "anonymize finish",
												ALLOCSET_DEFAULT_SIZES);

	while (i < st->nreqs)
	{
		int64	   *ids = MemoryContextAlloc(chunk, sizeof(int64) * FINISH_CHUNK);
		Datum	   *pd = MemoryContextAlloc(chunk, sizeof(Datum) * FINISH_CHUNK);
		Datum	   *ed = MemoryContextAlloc(chunk, sizeof(Datum) * FINISH_CHUNK);
		bool	   *pn = MemoryContextAlloc(chunk, sizeof(bool) * FINISH_CHUNK);
		bool	   *en = MemoryContextAlloc(chunk, sizeof(bool) * FINISH_CHUNK);
		int		   *idx = MemoryContextAlloc(chunk, sizeof(int) * FINISH_CHUNK);
		Datum	   *rows = MemoryContextAlloc(chunk, sizeof(Datum) * FINISH_CHUNK);
		bool	   *rn = MemoryContextAlloc(chunk, sizeof(bool) * FINISH_CHUNK);
		int			n = 0;
		uint8		key[ANONYMIZE_KEY_LEN];
		int			dims[1];
		int			lbs[1] = {1};
		Datum		values[3];
		Oid			types[3] = {INT8ARRAYOID, BYTEAARRAYOID, BYTEAARRAYOID};

		for (; i < st->nreqs && n < FINISH_CHUNK; i++)
			if (st->reqs[i].active)
				idx[n++] = i;
		if (n == 0)
			break;

		run_begin_xact();
		run_activity(st, "finishing requests %s", request_ids(st, idx, n));

		/* a target added during the run is scanned before any request ends */
		run_exec("LOCK TABLE anonymize.target IN SHARE MODE", 0, NULL, NULL,
				 NULL, SPI_OK_UTILITY);
		if (run_new_targets(st) < st->ntargets)
		{
			run_commit_xact();
			MemoryContextDelete(chunk);
			return false;
		}

		anonymize_digest_key(key, true);
		for (int j = 0; j < n; j++)
		{
			AnonymizeRequest *r = &st->reqs[idx[j]];

			ids[j] = r->id;
			pn[j] = !r->has_phone;
			en[j] = r->email == NULL;
			if (r->has_phone)
			{
				bytea	   *b = palloc(VARHDRSZ + ANONYMIZE_DIGEST_LEN);

				SET_VARSIZE(b, VARHDRSZ + ANONYMIZE_DIGEST_LEN);
				anonymize_digest(key, ANONYMIZE_KIND_PHONE, r->phone,
								 strlen(r->phone), (uint8 *) VARDATA(b));
				pd[j] = PointerGetDatum(b);
			}
			if (r->email)
			{
				bytea	   *b = palloc(VARHDRSZ + ANONYMIZE_DIGEST_LEN);

				SET_VARSIZE(b, VARHDRSZ + ANONYMIZE_DIGEST_LEN);
				anonymize_digest(key, ANONYMIZE_KIND_EMAIL, r->email,
								 strlen(r->email), (uint8 *) VARDATA(b));
				ed[j] = PointerGetDatum(b);
			}
		}
		memset(key, 0, sizeof(key));
		dims[0] = n;
		values[0] = PointerGetDatum(int8_array(ids, n));
		values[1] = PointerGetDatum(construct_md_array(pd, pn, 1, dims, lbs,
													   BYTEAOID, -1, false,
													   TYPALIGN_INT));
		values[2] = PointerGetDatum(construct_md_array(ed, en, 1, dims, lbs,
													   BYTEAOID, -1, false,
													   TYPALIGN_INT));
		run_exec("INSERT INTO anonymize.request_private (request_id, phone_digest, email_digest)"
				 " SELECT * FROM unnest($1, $2, $3)"
				 " ON CONFLICT (request_id) DO UPDATE"
				 " SET phone_digest = EXCLUDED.phone_digest, email_digest = EXCLUDED.email_digest",
				 3, types, values, NULL, SPI_OK_INSERT);

		/*
		 * A receipt of 0 rows for every target checked for the request.  The
		 * run knows which receipts its batches committed: only requests that
		 * had receipts before it (a killed run's) need the conflict check.
		 */
		for (int t = 0; t < st->ntargets; t++)
		{
			AnonymizeTarget *target = &st->targets[t];
			int64	   *tids = palloc(sizeof(int64) * n);
			int			nt = 0;
			Datum		rv[3];
			Oid			rt[3] = {INT8ARRAYOID, TEXTOID, TEXTOID};

			for (int j = 0; j < n; j++)
				if (st->reqs[idx[j]].scope[target->scope] &&
					(st->prior[idx[j]] ||
					 !(st->trows[t][idx[j] / 8] & (1 << (idx[j] % 8)))))
					tids[nt++] = st->reqs[idx[j]].id;
			if (nt == 0)
				continue;
			rv[0] = PointerGetDatum(int8_array(tids, nt));
			rv[1] = CStringGetTextDatum(target->name);
			rv[2] = CStringGetTextDatum(target->col);
			run_exec("INSERT INTO anonymize.request_log (request_id, event, target, col, rows)"
					 " SELECT r, 'rewrite', $2, $3, 0 FROM unnest($1) AS u(r)"
					 " ON CONFLICT (request_id, target, col) WHERE event = 'rewrite' DO NOTHING",
					 3, rt, rv, NULL, SPI_OK_INSERT);
			pfree(tids);
		}

		/*
		 * rows_anonymized: the sum of the request's receipts, which is the
		 * run's own count unless receipts existed before it (NULL: summed).
		 */
		for (int j = 0; j < n; j++)
		{
			rn[j] = st->prior[idx[j]];
			rows[j] = Int64GetDatum(st->rewritten[idx[j]]);
		}
		values[1] = PointerGetDatum(construct_md_array(rows, rn, 1, dims, lbs,
													   INT8OID, 8, FLOAT8PASSBYVAL,
													   TYPALIGN_DOUBLE));
		types[1] = INT8ARRAYOID;
		run_page_write_begin();
		/* an index probe per request, never a scan of the page */
		run_exec("SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off;"
				 " SET LOCAL enable_mergejoin = off",
				 0, NULL, NULL, NULL, SPI_OK_UTILITY);
		run_exec("WITH d AS ("
				 " UPDATE anonymize.anonymize_request r SET"
				 "  phone = anonymize.mask_phone(r.phone),"
				 "  email = anonymize.mask_email(anonymize.normalize_email(r.email)),"
				 "  status = 'Done', done_at = pg_catalog.now(), error = NULL,"
				 "  rows_anonymized = coalesce(u.n, (SELECT sum(l.rows) FROM anonymize.request_log l"
				 "   WHERE l.request_id = r.id AND l.event = 'rewrite'), 0)"
				 " FROM unnest($1, $2) AS u(id, n)"
				 " WHERE r.id = u.id AND r.status = 'Running'"
				 " RETURNING r.id, r.rows_anonymized)"
				 " INSERT INTO anonymize.request_log (request_id, event, status, detail)"
				 " SELECT id, 'status', 'Done', 'rows rewritten: ' || rows_anonymized FROM d",
				 2, types, values, NULL, SPI_OK_INSERT);
		st->result->requests_done += SPI_processed;
		run_page_write_end();
		run_commit_xact();

		for (int j = 0; j < n; j++)
			st->reqs[idx[j]].active = false;
		MemoryContextReset(chunk);
	}
	MemoryContextDelete(chunk);
	return true;
}

/* ---------------------------------------------------------------------
 * End: run_log, vacuum
 * ---------------------------------------------------------------------
 */

static void
run_record(RunState *st, const char *outcome, const char *error)
{
	Oid			types[7] = {INT8OID, TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', error ? ' ' : 'n', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(st->run_id);
	values[1] = CStringGetTextDatum(outcome);
	values[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
	values[3] = Int64GetDatum(st->result->requests_done);
	values[4] = Int64GetDatum(st->result->requests_held);
	values[5] = Int64GetDatum(st->result->requests_failed);
	values[6] = Int64GetDatum(st->result->rows_rewritten);
	run_begin_xact();
	run_exec("UPDATE anonymize.run_log SET finished_at = pg_catalog.clock_timestamp(),"
			 " outcome = $2, error = $3, requests_done = $4, requests_held = $5,"
			 " requests_failed = $6, rows_rewritten = $7 WHERE id = $1",
			 7, types, values, nulls, SPI_OK_UPDATE);
	run_commit_xact();
}

/*
 * VACUUM (INDEX_CLEANUP ON) what the run touched, so that no dead row
 * version keeps an identifier: as a top-level command, which it is in this
 * background process, each relation in a transaction of its own.
 */
static void
run_vacuum(RunState *st)
{
	List	   *relids;
	List	   *rels = NIL;
	ListCell   *lc;
	VacuumStmt *stmt;
	ParseState *pstate;
	MemoryContext save;
	MemoryContext old;
	volatile bool whole = st->vacuum_owed;	/* scrub: noted pages unknown */
	AnonymizeScrubStats scrub;

	/* in the run's context: transactions come and go below */
	old = MemoryContextSwitchTo(st->cxt);
	relids = list_copy(st->touched);

	/* a resumed request's earlier batches may have left dead versions */
	for (int i = 0; i < st->nreqs; i++)
		if (st->resumed[i])
		{
			relids = list_concat_unique_oid(relids, st->scanned_leaves);
			whole = true;
			break;
		}
	MemoryContextSwitchTo(old);

	/* an earlier run's vacuum did not end: every target's leaves */
	if (st->vacuum_owed)
	{
		run_begin_xact();
		run_exec(ANONYMIZE_TARGETS_SQL, 0, NULL, NULL, NULL, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc,
															   1, &isnull));

			old = MemoryContextSwitchTo(st->cxt);
			relids = list_concat_unique_oid(relids, anonymize_target_leaves(relid));
			MemoryContextSwitchTo(old);
		}
		run_commit_xact();
	}
	old = MemoryContextSwitchTo(st->cxt);

	/*
	 * The page always: besides the run's own writes, the portal's edits and
	 * cancellations leave old versions with identifiers in it.
	 */
	{
		Oid			nsp;

		Oid			page;
		Oid			private;

		StartTransactionCommand();
		nsp = get_namespace_oid("anonymize", false);
		page = get_relname_relid("anonymize_request", nsp);
		private = get_relname_relid("request_private", nsp);
		CommitTransactionCommand();
		relids = list_append_unique_oid(relids, page);
		relids = list_append_unique_oid(relids, private);
	}
	MemoryContextSwitchTo(old);
	if (relids == NIL)
		return;

	/*
	 * vacuum() keeps its state under PortalContext and commits the
	 * transaction it was called in: the statement must outlive it.
	 */
	save = PortalContext;
	PortalContext = AllocSetContextCreate(TopMemoryContext, "anonymize vacuum",
										  ALLOCSET_DEFAULT_SIZES);
	StartTransactionCommand();
	old = MemoryContextSwitchTo(PortalContext);
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);
		char	   *nsp;
		char	   *name;

		name = get_rel_name(relid);
		if (name == NULL)
			continue;			/* dropped meanwhile */
		nsp = get_namespace_name(get_rel_namespace(relid));
		rels = lappend(rels, makeVacuumRelation(makeRangeVar(nsp, name, -1),
												relid, NIL));
	}
	stmt = makeNode(VacuumStmt);
	stmt->options = list_make1(makeDefElem("index_cleanup",
										   (Node *) makeString("on"), -1));

	/*
	 * A member of another process's lock group (the worker of run()) cannot
	 * lead parallel workers: they would wait for its locks forever.
	 */
	if (MyProc->lockGroupLeader != NULL && MyProc->lockGroupLeader != MyProc)
		stmt->options = lappend(stmt->options,
								makeDefElem("parallel", (Node *) makeInteger(0), -1));
	stmt->rels = rels;
	stmt->is_vacuumcmd = true;
	pstate = make_parsestate(NULL);
	MemoryContextSwitchTo(old);
	run_activity(st, "vacuuming %d tables", list_length(rels));
	if (rels != NIL)
	{
		/*
		 * With anonymize.batch_delay, the vacuum is cost-delayed too, as
		 * autovacuum is by default (2 ms a pause, vacuum_cost_limit): a
		 * longer pause a vacuum_cost_limit makes it many times slower.
		 */
		double		save_delay = VacuumCostDelay;

		if (anonymize_batch_delay > 0)
			VacuumCostDelay = Min(anonymize_batch_delay, 2);
		PG_TRY();
		{
			ExecVacuum(pstate, stmt, true);
		}
		PG_FINALLY();
		{
			VacuumCostDelay = save_delay;
		}
		PG_END_TRY();
	}
	CommitTransactionCommand();
	MemoryContextDelete(PortalContext);
	PortalContext = save;

	/* old versions kept by an older snapshot: the next run does it again */
	if (!anonymize_scrub_run(relids, whole, st->run_id, &scrub))
		return;
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* with the vacuum owed, what the earlier runs left is vacuumed too */
	run_exec("UPDATE anonymize.run_log SET vacuumed_at = pg_catalog.clock_timestamp()"
			 " WHERE id = $1 OR ($2 AND id < $1 AND vacuumed_at IS NULL)",
			 2, (Oid[]) {INT8OID, BOOLOID},
			 (Datum[]) {Int64GetDatum(st->run_id), BoolGetDatum(st->vacuum_owed)},
			 NULL, SPI_OK_UPDATE);
	run_commit_xact();
}

/* ---------------------------------------------------------------------
 * The run
 * ---------------------------------------------------------------------
 */

void
anonymize_run_execute(AnonymizeRunResult *result, const char *trigger)
{
	anonymize_run_execute_ext(result, trigger, NULL, NULL);
}

void
anonymize_run_execute_ext(AnonymizeRunResult *result, const char *trigger,
						  anonymize_run_committed_hook committed, void *arg)
{
	RunState	st;
	MemoryContext oldcxt = CurrentMemoryContext;

	if (IsTransactionState())
		elog(ERROR, "anonymize_run_execute must be called outside a transaction");

	memset(result, 0, sizeof(*result));
	memset(&st, 0, sizeof(st));
	st.result = result;
	st.trigger = trigger;
	st.cxt = AllocSetContextCreate(TopMemoryContext, "anonymize run",
								   ALLOCSET_DEFAULT_SIZES);
	anonymize_scrub_begin(st.cxt);

	pgstat_report_activity(STATE_RUNNING, "anonymize run: waiting for the run lock");
	StartTransactionCommand();
	run_lock(true);
	CommitTransactionCommand();

	PG_TRY();
	{
		int			first;

		run_start(&st);
		ereport(LOG,
				(errmsg("anonymize run %lld started (%s)", (long long) st.run_id,
						trigger)));
		run_activity(&st, "marking due requests");
		run_load_requests(&st);

		if (st.nreqs > 0)
		{
			/* targets from index first on are not scanned yet */
			first = 0;
			run_begin_xact();
			(void) run_new_targets(&st);
			run_commit_xact();
			for (;;)
			{
				if (first < st.ntargets)
					run_targets(&st, first);
				first = st.ntargets;
				/* false: run_finish() found targets added meanwhile */
				if (run_finish(&st))
					break;
			}
		}
		anonymize_engine_set_recheck(NULL, 0);
		anonymize_retention_run(&st.touched, st.cxt);
		run_record(&st, "ok", NULL);
		ereport(LOG,
				(errmsg("anonymize run %lld finished: %lld requests done, %lld held, %lld failed, %lld rows rewritten",
						(long long) st.run_id,
						(long long) result->requests_done,
						(long long) result->requests_held,
						(long long) result->requests_failed,
						(long long) result->rows_rewritten)));
		if (committed)
			committed(arg, result);
		run_vacuum(&st);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		anonymize_engine_set_recheck(NULL, 0);

		/* a detail or context could quote a row: keep only the message */
		edata->detail = NULL;
		edata->detail_log = NULL;
		edata->context = NULL;
		edata->internalquery = NULL;
		edata->cursorpos = 0;
		edata->internalpos = 0;

		if (st.run_id > 0)
		{
			PG_TRY();
			{
				run_record(&st, "failed", edata->message);
			}
			PG_CATCH();
			{
				FlushErrorState();
				AbortOutOfAnyTransaction();
			}
			PG_END_TRY();
		}
		run_lock(false);
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextDelete(st.cxt);
		ReThrowError(edata);
	}
	PG_END_TRY();

	run_lock(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextDelete(st.cxt);
}
