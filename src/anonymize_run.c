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

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
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

#include "anonymize_citus.h"
#include "anonymize_engine.h"
#include "anonymize_ledger.h"
#include "anonymize_request.h"
#include "anonymize_retention.h"
#include "anonymize_run_parallel.h"
#include "anonymize_run_private.h"
#include "anonymize_scrub.h"
#include "anonymize_settings.h"
#include "anonymize_throttle.h"
#include "anonymize_xact.h"

/* ---------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------
 */

/* SPI_execute_with_args(), read-write, expecting the result code expected */
void
anonymize_run_exec(const char *sql, int nargs, Oid *types, Datum *values,
				   const char *nulls, int expected)
{
	int			ret = SPI_execute_with_args(sql, nargs, types, values, nulls,
											false, 0);

	if (ret != expected)
		elog(ERROR, "anonymize run: unexpected SPI result %d", ret);
}

/* Report "anonymize run N: " and the message in pg_stat_activity. */
void
anonymize_run_activity(RunState *st, const char *fmt,...)
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
char *
anonymize_run_request_ids(RunState *st, const int *idx, int n)
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

/* A bigint[] of v[0..n). */
ArrayType *
anonymize_run_int8_array(const int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	return construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/*
 * The receipt's detail key for rows of leaf: its qualified name when the
 * target has several tables (partitions, inheritance children), else null.
 */
void
anonymize_run_leaf_detail(AnonymizeTarget *target, Oid leaf, Datum *value, char *null)
{
	if (leaf != target->relid || has_subclass(target->relid))
	{
		*value = CStringGetTextDatum(quote_qualified_identifier(get_namespace_name(get_rel_namespace(leaf)),
																get_rel_name(leaf)));
		*null = ' ';
	}
	else
		*null = 'n';
}

/* Take or release the run lock (an advisory lock, session level). */
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
void
anonymize_run_page_write_begin(void)
{
	anonymize_internal_write_begin();
	anonymize_run_exec("SET LOCAL session_replication_role = replica", 0, NULL,
					   NULL, NULL, SPI_OK_UTILITY);
}

/* The end of the run's writes to the page: one relcache invalidation. */
void
anonymize_run_page_write_end(void)
{
	Oid			nsp;
	Oid			page;
	Oid			private;

	anonymize_run_exec("SET LOCAL session_replication_role = origin", 0, NULL,
					   NULL, NULL, SPI_OK_UTILITY);
	/* the digests of the guard on Citus tables, in the same transaction */
	if (anonymize_citus_installed())
		anonymize_run_exec("SELECT anonymize._citus_guard_sync()", 0, NULL,
						   NULL, NULL, SPI_OK_SELECT);
	anonymize_request_relids(&nsp, &page, &private);
	if (OidIsValid(page))
		CacheInvalidateRelcacheByRelid(page);
	anonymize_internal_write_end();
}

/* ---------------------------------------------------------------------
 * Start: run_log, due requests
 * ---------------------------------------------------------------------
 */

/* Close what a dead run left in run_log and record this run there. */
static void
run_start(RunState *st)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;

	values[0] = CStringGetTextDatum(st->trigger);
	anonymize_xact_begin();
	/* we hold the run lock: a run still 'running' died */
	anonymize_run_exec("UPDATE anonymize.run_log SET outcome = 'interrupted' "
					   "WHERE outcome = 'running'", 0, NULL, NULL, NULL, SPI_OK_UPDATE);

	/*
	 * A run killed or failed before its vacuum ended may have left dead
	 * versions of rewritten rows, even with all its requests Done (killed
	 * in the vacuum itself): this run vacuums every target then.
	 */
	anonymize_run_exec("SELECT EXISTS (SELECT FROM anonymize.run_log WHERE vacuumed_at IS NULL)",
					   0, NULL, NULL, NULL, SPI_OK_SELECT);
	st->vacuum_owed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1,
												 &isnull));
	anonymize_run_exec("INSERT INTO anonymize.run_log (trigger) VALUES ($1) RETURNING id",
					   1, types, values, NULL, SPI_OK_INSERT_RETURNING);
	st->run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1,
											 &isnull));
	anonymize_xact_commit();
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

	anonymize_xact_begin();
	anonymize_run_page_write_begin();
	/* what a killed or failed run left Running */
	anonymize_run_exec("SELECT coalesce(array_agg(id), '{}') FROM anonymize.anonymize_request"
					   " WHERE status = 'Running'",
					   0, NULL, NULL, NULL, SPI_OK_SELECT);
	resumed = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
							&isnull);
	anonymize_run_exec("WITH due AS ("
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
	anonymize_run_exec("SELECT r.id, r.phone, r.email, r.to_date, r.archive, r.sms_survey,"
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
		Datum		values[1] = {PointerGetDatum(anonymize_run_int8_array(failed, nfailed))};

		anonymize_run_exec("WITH f AS ("
						   " UPDATE anonymize.anonymize_request SET status = 'Failed',"
						   "  error = 'the phone number or email is not valid under the current settings'"
						   " WHERE id = ANY ($1) RETURNING id)"
						   " INSERT INTO anonymize.request_log (request_id, event, status)"
						   " SELECT id, 'status', 'Failed' FROM f",
						   1, (Oid[]) {INT8ARRAYOID}, values, NULL, SPI_OK_INSERT);
		st->result->requests_failed += nfailed;
	}
	/* the Done requests still in force, as late requests after these */
	anonymize_ledger_load(st);
	anonymize_run_page_write_end();
	anonymize_xact_commit();
	pfree(failed);
	anonymize_engine_set_recheck(st->reqs, st->nreqs);
}

/* ---------------------------------------------------------------------
 * Targets
 * ---------------------------------------------------------------------
 */

/* Is (relid, col) among the run's targets already? */
static bool
run_target_known(RunState *st, Oid relid, const char *col)
{
	for (int i = 0; i < st->ntargets; i++)
		if (st->targets[i].relid == relid && strcmp(st->targets[i].col, col) == 0)
			return true;
	return false;
}

/* Does an active request tick the scope? */
static bool
run_scope_wanted(RunState *st, int scope)
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
int
anonymize_run_new_targets(RunState *st)
{
	int			first = st->ntargets;
	MemoryContext old;

	anonymize_run_exec(ANONYMIZE_TARGETS_SQL, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(st->cxt);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc,
														   1, &isnull));
		char	   *col = anonymize_spi_text(i, 3);
		int			scope = anonymize_scope_number(anonymize_spi_text(i, 5));

		if (run_target_known(st, relid, col) || !run_scope_wanted(st, scope))
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
			st->tfailed = st->tfailed
				? repalloc(st->tfailed, sizeof(char *) * st->maxtargets)
				: palloc(sizeof(char *) * st->maxtargets);
			st->tchecked = st->tchecked
				? repalloc(st->tchecked, sizeof(bool) * st->maxtargets)
				: palloc(sizeof(bool) * st->maxtargets);
		}
		st->trows[st->ntargets] = palloc0(st->nreqs / 8 + 1);
		st->tfailed[st->ntargets] = NULL;
		st->tchecked[st->ntargets] = false;
		anonymize_target_fill(&st->targets[st->ntargets++], i);
	}
	MemoryContextSwitchTo(old);
	return first;
}

/* ---------------------------------------------------------------------
 * Scanning
 * ---------------------------------------------------------------------
 */

/* what run_match() is called with: the run and the target scanned */
typedef struct RunScanArg
{
	RunState   *st;
	int			target;
} RunScanArg;

/* The engine's callback: remember a matching row (and count it per request). */
static void
run_match(void *arg, Oid leaf, ItemPointer tid, const int *reqs, int nreqs)
{
	RunScanArg *sa = (RunScanArg *) arg;
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

/* qsort() comparator of matches of one leaf: by TID */
static int
run_cmp_match_tid(const void *a, const void *b)
{
	return ItemPointerCompare((ItemPointer) &((const RunMatch *) a)->tid,
							  (ItemPointer) &((const RunMatch *) b)->tid);
}

/*
 * Scan one leaf: by its index over canonical_phone() when the engine may
 * probe it, else with the run's workers when it is large enough
 * (anonymize_run_parallel.h), else alone.  The matches of a probe or a
 * parallel scan come in any order: sorted by TID, they are the serial
 * scan's, and the rewrite's batches the same.
 */
static void
run_scan_leaf(RunState *st, AnonymizeMatchSet *ms, AnonymizeTarget *target,
			  Relation rel, RunScanArg *sa)
{
	int64		before = st->nmatches;
	Relation	index = anonymize_probe_index_open(ms, target, rel);

	if (index != NULL)
	{
		anonymize_run_activity(st, "looking up %d identifiers in an index of %s (%s)",
							   anonymize_matchset_size(ms), target->name,
							   RelationGetRelationName(rel));
		anonymize_engine_lookup(ms, target, rel, index, run_match, sa);
		index_close(index, AccessShareLock);
	}
	else
	{
		anonymize_run_activity(st, "scanning %s (%s, %ld pages) for %d identifiers",
							   target->name, RelationGetRelationName(rel),
							   (long) RelationGetNumberOfBlocks(rel),
							   anonymize_matchset_size(ms));
		if (!anonymize_run_parallel_scan(st->run_id, ms, st->reqs, st->nreqs,
										 target, rel, run_match, sa))
			anonymize_engine_seqscan(ms, target, rel, run_match, sa);
	}
	if (st->nmatches - before > 1)
		qsort(st->matches + before, st->nmatches - before, sizeof(RunMatch),
			  run_cmp_match_tid);
}

/* qsort() comparator of matches of several leaves: by leaf, then TID */
static int
run_cmp_match_leaf_tid(const void *a, const void *b)
{
	const RunMatch *x = (const RunMatch *) a;
	const RunMatch *y = (const RunMatch *) b;

	if (x->leaf != y->leaf)
		return x->leaf < y->leaf ? -1 : 1;
	return ItemPointerCompare((ItemPointer) &x->tid, (ItemPointer) &y->tid);
}

/*
 * The leaves of a target that the run's processes scan a whole table each
 * (anonymize_run_parallel_leaves()): of those that may match and are not
 * looked up in an index, the ones no larger than a process's share of
 * them all (a larger one is scanned alone, by block ranges).  Opened in
 * rels, their pages in *kept_pages; how many.
 */
static int
run_whole_leaves(AnonymizeMatchSet *ms, AnonymizeTarget *target, List *leaves,
				 int participants, Relation *rels, BlockNumber *kept_pages)
{
	BlockNumber *pages = palloc(sizeof(BlockNumber) * list_length(leaves));
	BlockNumber total = 0;
	int			n = 0;
	int			kept = 0;
	ListCell   *lc;

	foreach(lc, leaves)
	{
		Relation	rel = try_table_open(lfirst_oid(lc), AccessShareLock);
		Relation	index;

		if (rel == NULL)
			continue;
		if (!anonymize_leaf_may_match(ms, target, rel))
		{
			table_close(rel, AccessShareLock);
			continue;
		}
		/* a leaf the run looks up in an index is not scanned */
		if ((index = anonymize_probe_index_open(ms, target, rel)) != NULL)
		{
			index_close(index, AccessShareLock);
			table_close(rel, AccessShareLock);
			continue;
		}
		pages[n] = RelationGetNumberOfBlocks(rel);
		total += pages[n];
		rels[n++] = rel;
	}
	*kept_pages = 0;
	for (int i = 0; i < n; i++)
	{
		if ((uint64) pages[i] * participants > total)
			table_close(rels[i], AccessShareLock);
		else
		{
			rels[kept++] = rels[i];
			*kept_pages += pages[i];
		}
	}
	pfree(pages);
	return kept;
}

/*
 * Scan the small leaves of a target together, each process a whole table
 * at a time, when it has several and parallel runs are on; the leaves the
 * loop of run_scan_targets() still has to scan, one by one.
 */
static List *
run_scan_whole_leaves(RunState *st, AnonymizeMatchSet *ms,
					  AnonymizeTarget *target, List *leaves, RunScanArg *sa)
{
	int			participants = anonymize_parallel_workers_max() + 1;
	Relation   *rels;
	int			n;
	BlockNumber total;
	int64		before = st->nmatches;
	List	   *rest = leaves;

	if (participants < 2 || list_length(leaves) < 2)
		return leaves;
	anonymize_xact_begin();
	rels = palloc(sizeof(Relation) * list_length(leaves));
	n = run_whole_leaves(ms, target, leaves, participants, rels, &total);
	if (n >= 2 && total >= (BlockNumber) anonymize_parallel_min_table_size)
	{
		anonymize_run_activity(st, "scanning %s (%d tables, %ld pages) for %d identifiers, a whole table a process",
							   target->name, n, (long) total,
							   anonymize_matchset_size(ms));
		if (anonymize_run_parallel_leaves(st->run_id, ms, st->reqs, st->nreqs,
										  target, rels, n, run_match, sa))
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			rest = list_copy(leaves);
			for (int i = 0; i < n; i++)
			{
				rest = list_delete_oid(rest, RelationGetRelid(rels[i]));
				st->scanned_leaves = list_append_unique_oid(st->scanned_leaves,
															RelationGetRelid(rels[i]));
			}
			MemoryContextSwitchTo(old);
			if (st->nmatches - before > 1)
				qsort(st->matches + before, st->nmatches - before,
					  sizeof(RunMatch), run_cmp_match_leaf_tid);
		}
	}
	for (int i = 0; i < n; i++)
		table_close(rels[i], AccessShareLock);
	anonymize_xact_commit();
	return rest;
}

/* Scan the targets from index first on, collecting their matching rows. */
static void
run_scan_targets(RunState *st, int first)
{
	st->nmatches = 0;
	st->overflow = false;
	for (int t = first; t < st->ntargets; t++)
	{
		AnonymizeTarget *target = &st->targets[t];
		AnonymizeMatchSet *ms;
		AnonymizeLedgerSet *ls;
		List	   *leaves;
		ListCell   *lc;
		RunScanArg	sa = {st, t};

		ms = anonymize_matchset_build(st->reqs, st->nreqs, target->kind,
									  target->scope);
		ls = anonymize_ledger_set_build(st, target);
		anonymize_matchset_set_ledger(ms, ls);
		if (anonymize_matchset_empty(ms) ||
			anonymize_citus_run_scan(st, t, ls != NULL))
		{
			/* nothing due, or a Citus table: counted and rewritten on its shards */
			anonymize_matchset_free(ms);
			continue;
		}
		anonymize_xact_begin();
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			leaves = anonymize_target_leaves(target->relid);
			MemoryContextSwitchTo(old);
		}
		anonymize_xact_commit();
		leaves = run_scan_whole_leaves(st, ms, target, leaves, &sa);

		foreach(lc, leaves)
		{
			Oid			leafid = lfirst_oid(lc);
			Relation	rel;

			anonymize_xact_begin();
			rel = try_table_open(leafid, AccessShareLock);
			if (rel != NULL && !anonymize_leaf_may_match(ms, target, rel))
			{
				/* a partition of later times: nothing in it is due */
				table_close(rel, AccessShareLock);
				rel = NULL;
			}
			if (rel != NULL)
			{
				run_scan_leaf(st, ms, target, rel, &sa);
				table_close(rel, AccessShareLock);
				if (!list_member_oid(st->scanned_leaves, leafid))
				{
					MemoryContext old = MemoryContextSwitchTo(st->cxt);

					st->scanned_leaves = lappend_oid(st->scanned_leaves, leafid);
					MemoryContextSwitchTo(old);
				}
			}
			anonymize_xact_commit();
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
		anonymize_xact_begin();
		anonymize_run_page_write_begin();
		anonymize_run_exec("WITH h AS ("
						   " UPDATE anonymize.anonymize_request SET status = 'Held', error = $2"
						   " WHERE id = $1 AND status = 'Running' RETURNING id)"
						   " INSERT INTO anonymize.request_log (request_id, event, status, detail)"
						   " SELECT id, 'status', 'Held', $2 FROM h",
						   2, types, values, NULL, SPI_OK_INSERT);
		anonymize_run_page_write_end();
		anonymize_xact_commit();
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

/* qsort() and bsearch() comparator of ints */
int
anonymize_run_cmp_int(const void *a, const void *b)
{
	int			x = *(const int *) a;
	int			y = *(const int *) b;

	return (x > y) - (x < y);
}

/* The distinct request indexes of matches[from..from+n), sorted. */
int *
anonymize_run_batch_requests(RunState *st, int64 from, int n, int *nids)
{
	int		   *ids = palloc(sizeof(int) * n);

	for (int i = 0; i < n; i++)
		ids[i] = st->matches[from + i].req;
	qsort(ids, n, sizeof(int), anonymize_run_cmp_int);
	*nids = 0;
	for (int i = 0; i < n; i++)
		if (i == 0 || ids[i] != ids[i - 1])
			ids[(*nids)++] = ids[i];
	return ids;
}

/*
 * Add the batch's rows to the requests' receipts for the target.  For a
 * target of several tables (partitions, inheritance children) the
 * receipt's detail counts the rows per table, as a JSON object.
 */
static void
run_batch_receipts(RunState *st, AnonymizeTarget *target, Oid leaf,
				   const int *ids, int nids, const int64 *rcount)
{
	int64	   *rid = palloc(sizeof(int64) * nids);
	Oid			types[5] = {INT8ARRAYOID, INT8ARRAYOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int64	   *rn = palloc(sizeof(int64) * nids);

	/* a late request's rows are receipts of their own (event 'late') */
	anonymize_ledger_receipts(st, target, leaf, ids, nids, rcount);
	for (int i = 0; i < nids; i++)
	{
		rid[i] = st->reqs[ids[i]].id;
		rn[i] = st->reqs[ids[i]].late ? 0 : rcount[i];
	}
	values[0] = PointerGetDatum(anonymize_run_int8_array(rid, nids));
	values[1] = PointerGetDatum(anonymize_run_int8_array(rn, nids));
	values[2] = CStringGetTextDatum(target->name);
	values[3] = CStringGetTextDatum(target->col);
	anonymize_run_leaf_detail(target, leaf, &values[4], &nulls[4]);
	anonymize_run_exec("INSERT INTO anonymize.request_log AS l (request_id, event, target, col, rows, detail)"
					   " SELECT r, 'rewrite', $3, $4, n,"
					   "  CASE WHEN $5 IS NOT NULL THEN pg_catalog.jsonb_build_object($5, n)::text END"
					   " FROM unnest($1, $2) AS u(r, n) WHERE n > 0"
					   " ON CONFLICT (request_id, target, col) WHERE event = 'rewrite'"
					   " DO UPDATE SET rows = l.rows + EXCLUDED.rows,"
					   "  detail = CASE WHEN $5 IS NOT NULL AND (l.detail IS NULL OR l.detail LIKE '{%') THEN"
					   "   (coalesce(l.detail::jsonb, '{}') || pg_catalog.jsonb_build_object($5,"
					   "    coalesce((l.detail::jsonb ->> $5)::bigint, 0) + EXCLUDED.rows))::text"
					   "   ELSE l.detail END,"
					   "  updated_at = pg_catalog.clock_timestamp()",
					   5, types, values, nulls, SPI_OK_INSERT);
}

/*
 * After the commit: the run's own count of what its batches rewrote (for
 * the finishing receipts) and the leaf to vacuum.
 */
static void
run_batch_account(RunState *st, const RunMatch *first, const int *ids,
				  int nids, const int64 *rcount)
{
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
}

/*
 * The batch's rows (noted for the scrub first when note), rewritten, and
 * their receipts, committed: how many rows in *rewritten.  An error about
 * what it writes (a constraint added after registration, a value too
 * long) aborts the batch: false, with the error's message in *reason.
 * Any other error is the run's.
 */
static bool
run_batch_write(RunState *st, AnonymizeTarget *target, Oid leaf, int64 from,
				int n, const int *ids, int nids, int64 *rcount,
				int64 *rewritten, bool note, char **reason)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		if (note)
			anonymize_run_note_rows(st, target, leaf, from, n);
		*rewritten = anonymize_run_rewrite_rows(st, target, leaf, from, n,
												ids, nids, rcount);
		if (*rewritten > 0)
			run_batch_receipts(st, target, leaf, ids, nids, rcount);
		anonymize_xact_commit();
	}
	PG_CATCH();
	{
		/* out of any transaction then, as after the commit */
		*reason = anonymize_run_target_caught(st->cxt, cxt);
		return false;
	}
	PG_END_TRY();
	return true;
}

/*
 * Rewrite matches[from..from+n) (one target, one leaf; rows done + 1 to
 * done + n of total in that leaf) in one transaction with their receipts.
 * ids[0..nids) are the batch's requests (anonymize_run_batch_requests()),
 * rcount[i] gets the rows rewritten of ids[i].
 */
RunBatchOutcome
anonymize_run_batch(RunState *st, int64 from, int n, int64 done, int64 total,
					const int *ids, int nids, int64 *rcount, bool note,
					int64 *rewritten, char **reason)
{
	RunMatch   *first = &st->matches[from];
	AnonymizeTarget *target = &st->targets[first->target];

	*rewritten = 0;
	*reason = NULL;
	anonymize_xact_begin();
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(first->leaf)))
	{
		anonymize_xact_commit();	/* dropped meanwhile: nothing to rewrite */
		return RUN_BATCH_GONE;
	}
	anonymize_run_activity(st, "rewriting %s, rows %lld to %lld of %lld (requests %s)",
						   target->name, (long long) done + 1, (long long) done + n,
						   (long long) total, anonymize_run_request_ids(st, ids, nids));
	if (!run_batch_write(st, target, first->leaf, from, n, ids, nids, rcount,
						 rewritten, note, reason))
		return RUN_BATCH_FAILED;
	return RUN_BATCH_WRITTEN;
}

/*
 * What the run keeps of a batch at matches[from], committed: the rows it
 * rewrote, per request, and the leaf to vacuum; or, when reason is not
 * NULL, its target failed for that reason.
 */
void
anonymize_run_batch_outcome(RunState *st, int64 from, const int *ids,
							int nids, const int64 *rcount, int64 rewritten,
							const char *reason)
{
	RunMatch   *first = &st->matches[from];

	if (reason != NULL)
	{
		if (st->tfailed[first->target] == NULL)
			anonymize_run_fail_target(st, first->target, reason);
		return;
	}
	st->result->rows_rewritten += rewritten;
	run_batch_account(st, first, ids, nids, rcount);
}

/*
 * Rewrite matches[from..to) (one target, one leaf; rows done + 1 on of
 * total in that leaf) in one transaction, with their receipts, noted for
 * the scrub first when note, and keep its outcome.
 */
void
anonymize_run_rewrite_batch(RunState *st, int64 from, int64 to, int64 done,
							int64 total, bool note)
{
	int			n = to - from;
	int			nids;
	int		   *ids;
	int64	   *rcount;
	int64		rewritten;
	char	   *reason;

	/* allocated outside the transaction, whose memory goes with it */
	ids = anonymize_run_batch_requests(st, from, n, &nids);
	rcount = palloc0(sizeof(int64) * nids);
	if (anonymize_run_batch(st, from, n, done, total, ids, nids, rcount, note,
							&rewritten, &reason) != RUN_BATCH_GONE)
		anonymize_run_batch_outcome(st, from, ids, nids, rcount, rewritten,
									reason);
	pfree(ids);
	pfree(rcount);
}

/* The end of the (target, leaf) group of matches that starts at start. */
int64
anonymize_run_group_end(RunState *st, int64 start)
{
	int64		end = start;

	while (end < st->nmatches &&
		   st->matches[end].target == st->matches[start].target &&
		   st->matches[end].leaf == st->matches[start].leaf)
		end++;
	return end;
}

/* Rewrite the matches in batches, (target, leaf) group by group. */
static void
run_rewrite(RunState *st)
{
	int64		i = 0;
	int			batch = Max(anonymize_batch_size, 1);

	/* with the run's workers, when there are batches enough to share */
	if (anonymize_run_parallel_rewrite(st))
		return;
	while (i < st->nmatches)
	{
		int64		start = i;
		int64		groupend = anonymize_run_group_end(st, start);

		for (int64 b = start; b < groupend; b += batch)
		{
			CHECK_FOR_INTERRUPTS();
			/* checked before its first batch; failed: its rows are left */
			if (!anonymize_run_target_usable(st, st->matches[start].target))
				break;
			anonymize_run_rewrite_batch(st, b, Min(b + batch, groupend),
										b - start, groupend - start, true);
			/* the throttle: what the batch cost, slept off at once */
			anonymize_throttle_point();
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
	anonymize_throttle_begin();
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
	anonymize_throttle_end();
	st->nmatches = 0;
	anonymize_citus_run_rewrite(st, first);
	anonymize_run_refresh_matviews(st, first);
}

/* ---------------------------------------------------------------------
 * End: run_log, vacuum
 * ---------------------------------------------------------------------
 */

/* Record the run's outcome and counts in anonymize.run_log. */
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
	anonymize_xact_begin();
	anonymize_run_exec("UPDATE anonymize.run_log SET finished_at = pg_catalog.clock_timestamp(),"
					   " outcome = $2, error = $3, requests_done = $4, requests_held = $5,"
					   " requests_failed = $6, rows_rewritten = $7 WHERE id = $1",
					   7, types, values, nulls, SPI_OK_UPDATE);
	anonymize_xact_commit();
}

/* ---------------------------------------------------------------------
 * The run
 * ---------------------------------------------------------------------
 */

/* The run without a committed hook. */
void
anonymize_run_execute(AnonymizeRunResult *result, const char *trigger)
{
	anonymize_run_execute_ext(result, trigger, NULL, NULL);
}

/*
 * Every request of the run, to Done, Held or Failed: scan and rewrite the
 * targets, finish the requests, and again while finishing found targets
 * registered meanwhile.
 */
static void
run_requests(RunState *st)
{
	/* targets from index first on are not scanned yet */
	int			first = 0;

	anonymize_xact_begin();
	(void) anonymize_run_new_targets(st);
	anonymize_xact_commit();
	for (;;)
	{
		if (first < st->ntargets)
			run_targets(st, first);
		first = st->ntargets;
		/* false: anonymize_run_finish() found targets added meanwhile */
		if (anonymize_run_finish(st))
			break;
	}
}

/* The steps of the run, from run_log to the vacuum; raises on error. */
static void
run_steps(RunState *st, anonymize_run_committed_hook committed, void *arg)
{
	AnonymizeRunResult *result = st->result;

	run_start(st);
	ereport(LOG,
			(errmsg("anonymize run %lld started (%s)", (long long) st->run_id,
					st->trigger)));
	if (anonymize_batch_delay > 0)
		ereport(WARNING,
				(errmsg("anonymize.batch_delay is obsolete and ignored"),
				 errhint("Remove it from the configuration: anonymize.cost_delay and anonymize.cost_limit throttle the run.")));
	anonymize_run_activity(st, "marking due requests");
	run_load_requests(st);
	if (st->nreqs > 0)
		run_requests(st);
	anonymize_engine_set_recheck(NULL, 0);
	anonymize_ledger_save(st);
	anonymize_retention_run(&st->touched, st->cxt);
	anonymize_ledger_retention_run(st->cxt);
	run_record(st, "ok", NULL);
	ereport(LOG,
			(errmsg("anonymize run %lld finished: %lld requests done, %lld held, %lld failed, %lld rows rewritten",
					(long long) st->run_id,
					(long long) result->requests_done,
					(long long) result->requests_held,
					(long long) result->requests_failed,
					(long long) result->rows_rewritten)));
	if (committed)
		committed(arg, result);
	anonymize_run_vacuum(st);
}

/*
 * After an error: abort, and record the run as failed with the error's
 * message only (a detail or context could quote a row).  Returns the
 * error, stripped, to re-throw.
 */
static ErrorData *
run_failed(RunState *st, MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
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

	if (st->run_id > 0)
	{
		PG_TRY();
		{
			run_record(st, "failed", edata->message);
		}
		PG_CATCH();
		{
			FlushErrorState();
			AbortOutOfAnyTransaction();
		}
		PG_END_TRY();
	}
	return edata;
}

/* The end of a run, whatever its outcome: the lock, the activity, memory. */
static void
run_release(RunState *st)
{
	anonymize_throttle_end();
	run_lock(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextDelete(st->cxt);
}

/* Process every due request (see anonymize_run.h). */
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
		run_steps(&st, committed, arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata = run_failed(&st, oldcxt);

		run_release(&st);
		ReThrowError(edata);
	}
	PG_END_TRY();

	run_release(&st);
}
