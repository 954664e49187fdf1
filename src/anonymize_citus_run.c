/*-------------------------------------------------------------------------
 *
 * anonymize_citus_run.c
 *	  The run and a Citus target.  The coordinator's table holds no rows:
 *	  the run counts and rewrites the rows where they are, with distributed
 *	  statements that Citus runs on every shard placement in parallel,
 *	  each shard matching its rows with anonymize._citus_match() and the
 *	  run's match plan (anonymize_citus.c).
 *
 * - Counting pass (the Held guard): one grouped SELECT a target, the
 *   counts per request summed over every shard.
 * - Rewrite: one transaction a target, at REPEATABLE READ (Citus opens
 *   the shards' transactions at the coordinator's level), in
 *   anonymize._citus_rewrite(): the rows per request (the lowest id a row
 *   matches, as on one node), then the UPDATE; both on the same shard
 *   connections, so the receipts, written in the same transaction, are
 *   exact.  Citus commits the shards and the receipts together (two-phase
 *   commit): a run killed or a node lost before the commit leaves nothing
 *   half-done, and the requests Running for the next run.
 * - Vacuum and scrub: VACUUM (INDEX_CLEANUP ON) on every placement, REINDEX
 *   TABLE, then anonymize._citus_scrub() there
 *   (run_command_on_placements()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "anonymize_citus.h"
#include "anonymize_run_private.h"
#include "anonymize_settings.h"
#include "anonymize_xact.h"

/*
 * The ledger's Done requests are not applied to a Citus table: say so in
 * the log, once a run and table, instead of missing its late rows in
 * silence.  Matching them on the shards would need the digest key there
 * (Citus writes a distributed statement's parameters into the shards'
 * query text), and the shards' transaction ids give no horizon.
 */
static void
citus_run_warn_ledger(AnonymizeTarget *target)
{
	ereport(WARNING,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("Done requests are not applied again to Citus table \"%s\"",
					target->name),
			 errdetail("The run erases the rows of this run's requests on the shards, but rows written there after a request was Done, or restored from a backup, are not checked against the ledger."),
			 errhint("After a late import or a restore into a Citus table, file the affected requests again; see the Citus page of the documentation.")));
}

/*
 * In the run's scan of target t: is it a Citus table?  Then its shards
 * are counted here in the counting pass, and rewritten by
 * anonymize_citus_run_rewrite(), not scanned on this node.  in_ledger:
 * Done requests of the ledger apply to the target.
 */
bool
anonymize_citus_run_scan(RunState *st, int t, bool in_ledger)
{
	AnonymizeTarget *target = &st->targets[t];
	bool		citus;

	anonymize_xact_begin();
	citus = anonymize_citus_table(target->relid);
	if (citus && st->counting && in_ledger)
		citus_run_warn_ledger(target);
	if (citus && st->counting)
	{
		int64	   *matched = palloc0(sizeof(int64) * Max(st->nreqs, 1));

		anonymize_run_activity(st, "counting on the shards of %s", target->name);
		anonymize_citus_count(st->reqs, st->nreqs, target, matched, NULL);
		for (int i = 0; i < st->nreqs; i++)
			st->reqs[i].matched += matched[i];
	}
	anonymize_xact_commit();
	return citus;
}

/* Flag the active requests that rows of the Citus target still match. */
void
anonymize_citus_run_fail_count(RunState *st, AnonymizeTarget *target, bool *hit)
{
	int64	   *matched = palloc0(sizeof(int64) * Max(st->nreqs, 1));

	anonymize_citus_count(st->reqs, st->nreqs, target, matched, NULL);
	for (int i = 0; i < st->nreqs; i++)
		if (matched[i] > 0)
			hit[i] = true;
}

/* The receipts of target t: rows[i] rows rewritten for request i. */
static void
citus_run_receipts(RunState *st, AnonymizeTarget *target, const int64 *rows)
{
	int64	   *rid = palloc(sizeof(int64) * Max(st->nreqs, 1));
	int64	   *n = palloc(sizeof(int64) * Max(st->nreqs, 1));
	int			k = 0;
	Datum		values[4];

	for (int i = 0; i < st->nreqs; i++)
		if (rows[i] > 0)
		{
			rid[k] = st->reqs[i].id;
			n[k++] = rows[i];
		}
	if (k == 0)
		return;
	values[0] = PointerGetDatum(anonymize_run_int8_array(rid, k));
	values[1] = PointerGetDatum(anonymize_run_int8_array(n, k));
	values[2] = CStringGetTextDatum(target->name);
	values[3] = CStringGetTextDatum(target->col);
	anonymize_run_exec("INSERT INTO anonymize.request_log AS l (request_id, event, target, col, rows)"
					   " SELECT r, 'rewrite', $3, $4, n FROM unnest($1, $2) AS u(r, n)"
					   " ON CONFLICT (request_id, target, col) WHERE event = 'rewrite'"
					   " DO UPDATE SET rows = l.rows + EXCLUDED.rows,"
					   "  updated_at = pg_catalog.clock_timestamp()",
					   4, (Oid[]) {INT8ARRAYOID, INT8ARRAYOID, TEXTOID, TEXTOID},
					   values, NULL, SPI_OK_INSERT);
}

/*
 * The distributed count and UPDATE of target t (anonymize._citus_rewrite())
 * and its receipts, in the current transaction: rows[i] += the rows
 * rewritten for request i.  Returns the rows rewritten.
 */
static int64
citus_run_update(RunState *st, AnonymizeTarget *target, int64 *rows)
{
	bytea	   *plan = anonymize_citus_plan(st->reqs, st->nreqs, target);
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	char	   *repl;
	int64		counted = 0;
	int64		updated = -1;

	if (plan == NULL)
		return 0;
	values[0] = ObjectIdGetDatum(target->relid);
	values[1] = CStringGetTextDatum(target->col);
	values[2] = CStringGetTextDatum(target->time_col);
	values[3] = BoolGetDatum(anonymize_target_numeric(target));
	values[4] = PointerGetDatum(plan);
	repl = anonymize_run_replacement(target);
	values[5] = repl ? CStringGetTextDatum(repl) : (Datum) 0;
	nulls[5] = repl ? ' ' : 'n';
	anonymize_run_exec("SELECT req, n FROM anonymize._citus_rewrite($1, $2, $3, $4, $5, $6)",
					   6, (Oid[]) {OIDOID, TEXTOID, TEXTOID, BOOLOID, BYTEAOID, TEXTOID},
					   values, nulls, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		req = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		int64		n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 2, &isnull));

		if (DatumGetInt32(req) < 0)
			updated = n;		/* the UPDATE's row count */
		else if (DatumGetInt32(req) < st->nreqs)
		{
			rows[DatumGetInt32(req)] += n;
			counted += n;
		}
	}
	if (updated != counted)
		elog(ERROR, "anonymize run: the shards of %s rewrote %lld rows but counted %lld",
			 target->name, (long long) updated, (long long) counted);
	citus_run_receipts(st, target, rows);
	return updated;
}

/* After the commit: the run's own count of what target t rewrote. */
static void
citus_run_account(RunState *st, int t, const int64 *rows, int64 total)
{
	MemoryContext old = MemoryContextSwitchTo(st->cxt);

	for (int i = 0; i < st->nreqs; i++)
		if (rows[i] > 0)
		{
			st->rewritten[i] += rows[i];
			st->trows[t][i / 8] |= 1 << (i % 8);
		}
	st->result->rows_rewritten += total;
	if (!list_member_oid(st->citus_vacuum, st->targets[t].relid))
		st->citus_vacuum = lappend_oid(st->citus_vacuum, st->targets[t].relid);
	MemoryContextSwitchTo(old);
}

/*
 * Rewrite target t on its shards in one transaction at REPEATABLE READ.
 * An error about what it writes fails the target, as a batch's does; any
 * other (a node down) is the run's, which leaves its requests Running.
 */
static void
citus_run_rewrite_target(RunState *st, int t)
{
	AnonymizeTarget *target = &st->targets[t];
	int64	   *rows = MemoryContextAllocZero(st->cxt, sizeof(int64) * Max(st->nreqs, 1));
	int			save_iso = DefaultXactIsoLevel;
	MemoryContext cxt = CurrentMemoryContext;
	int64		total = 0;

	DefaultXactIsoLevel = XACT_REPEATABLE_READ;
	PG_TRY();
	{
		anonymize_xact_begin();
	}
	PG_FINALLY();
	{
		DefaultXactIsoLevel = save_iso;
	}
	PG_END_TRY();
	anonymize_run_activity(st, "rewriting %s on its shards", target->name);
	PG_TRY();
	{
		total = citus_run_update(st, target, rows);
		anonymize_xact_commit();
	}
	PG_CATCH();
	{
		anonymize_run_catch_target(st, t, cxt);
		pfree(rows);
		return;
	}
	PG_END_TRY();
	citus_run_account(st, t, rows, total);
	pfree(rows);
}

/* Rewrite the Citus targets from index first on, after the others. */
void
anonymize_citus_run_rewrite(RunState *st, int first)
{
	for (int t = first; t < st->ntargets; t++)
	{
		bool		citus;

		anonymize_xact_begin();
		citus = anonymize_citus_table(st->targets[t].relid);
		anonymize_xact_commit();
		if (!citus || !anonymize_run_target_usable(st, t))
			continue;
		CHECK_FOR_INTERRUPTS();
		citus_run_rewrite_target(st, t);
	}
}

/*
 * Run command (with %s for the placement's name) on every placement of
 * relid; the number of placements where it failed.
 */
static int64
citus_run_on_placements(Oid relid, const char *command)
{
	bool		isnull;
	Datum		d;

	anonymize_run_exec("SELECT pg_catalog.count(*) FILTER (WHERE NOT success)"
					   " FROM pg_catalog.run_command_on_placements($1::pg_catalog.regclass, $2)",
					   2, (Oid[]) {OIDOID, TEXTOID},
					   (Datum[]) {ObjectIdGetDatum(relid), CStringGetTextDatum(command)},
					   NULL, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(d);
}

/* The Citus targets to vacuum: rewritten, or all when resumed or owed. */
static List *
citus_run_vacuum_list(RunState *st)
{
	List	   *relids = list_copy(st->citus_vacuum);
	bool		all = st->vacuum_owed;

	for (int i = 0; i < st->nreqs; i++)
		all |= st->resumed[i];
	if (!all)
		return relids;
	anonymize_xact_begin();
	for (int t = 0; t < st->ntargets; t++)
		if (!list_member_oid(relids, st->targets[t].relid) &&
			anonymize_citus_table(st->targets[t].relid))
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			relids = lappend_oid(relids, st->targets[t].relid);
			MemoryContextSwitchTo(old);
		}
	anonymize_xact_commit();
	return relids;
}

/*
 * After the run's own vacuum: VACUUM (INDEX_CLEANUP ON) every placement of
 * the Citus targets rewritten, rebuild their indexes there (an inner page
 * of a btree may repeat an erased key as a separator; every index, not
 * only those that do, with anonymize.rebuild_indexes), then scrub their
 * pages there.  False when
 * a placement failed (a node down): the vacuum is not recorded as done,
 * so the next run does it again.
 */
bool
anonymize_citus_run_vacuum(RunState *st)
{
	List	   *relids = citus_run_vacuum_list(st);
	ListCell   *lc;
	int64		failed = 0;

	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		anonymize_xact_begin();
		anonymize_run_activity(st, "vacuuming and scrubbing the shards of %s",
							   get_rel_name(relid) ? get_rel_name(relid) : "?");
		failed += citus_run_on_placements(relid, "VACUUM (INDEX_CLEANUP ON) %s");
		/*
		 * An index's inner pages may keep an erased key as a separator.  Not
		 * CONCURRENTLY: on a placement of this node that would wait for this
		 * transaction's snapshot, which waits for it.
		 */
		if (anonymize_rebuild_indexes)
			failed += citus_run_on_placements(relid, "REINDEX TABLE %s");
		failed += citus_run_on_placements(relid, "SELECT anonymize._citus_scrub('%s')");
		anonymize_xact_commit();
	}
	if (failed > 0)
		ereport(LOG,
				(errmsg("anonymize run %lld: vacuuming or scrubbing %lld shard placements failed; the next run does it again",
						(long long) st->run_id, (long long) failed)));
	return failed == 0;
}
