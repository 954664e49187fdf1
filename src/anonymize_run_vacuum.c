/*-------------------------------------------------------------------------
 *
 * anonymize_run_vacuum.c
 *	  The last step of a run: VACUUM (INDEX_CLEANUP ON) of what it touched,
 *	  so that no dead row version keeps an identifier, then vacuumed_at in
 *	  anonymize.run_log.
 *
 * What is vacuumed: the leaves the run rewrote; every leaf it scanned when
 * it resumed requests a killed run left (their earlier batches may have
 * left dead versions); every target's leaves when an earlier run's vacuum
 * never ended (run_log.vacuumed_at NULL); the page and request_private
 * always.  The vacuum runs as a top-level command, which it is in this
 * background process, each relation in a transaction of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/vacuum.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "storage/proc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "anonymize_request.h"
#include "anonymize_run_private.h"
#include "anonymize_scrub.h"
#include "anonymize_settings.h"
#include "anonymize_xact.h"

/* Add the leaves of every registered target to relids (in the run's cxt). */
static List *
run_vacuum_all_targets(RunState *st, List *relids)
{
	anonymize_xact_begin();
	anonymize_run_exec(ANONYMIZE_TARGETS_SQL, 0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc,
														   1, &isnull));
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		relids = list_concat_unique_oid(relids, anonymize_target_leaves(relid));
		MemoryContextSwitchTo(old);
	}
	anonymize_xact_commit();
	return relids;
}

/*
 * Add the page and request_private: besides the run's own writes, the
 * portal's edits and cancellations leave old versions with identifiers in
 * them.
 */
static List *
run_vacuum_page(RunState *st, List *relids)
{
	Oid			nsp;
	Oid			page;
	Oid			private;
	MemoryContext old;

	StartTransactionCommand();
	anonymize_request_relids(&nsp, &page, &private);
	CommitTransactionCommand();
	old = MemoryContextSwitchTo(st->cxt);
	relids = list_append_unique_oid(relids, page);
	relids = list_append_unique_oid(relids, private);
	MemoryContextSwitchTo(old);
	return relids;
}

/* The OIDs of the relations to vacuum, in the run's context. */
static List *
run_vacuum_relids(RunState *st)
{
	List	   *relids;
	MemoryContext old;

	/* in the run's context: transactions come and go below */
	old = MemoryContextSwitchTo(st->cxt);
	relids = list_copy(st->touched);

	/* a resumed request's earlier batches may have left dead versions */
	for (int i = 0; i < st->nreqs; i++)
		if (st->resumed[i])
		{
			relids = list_concat_unique_oid(relids, st->scanned_leaves);
			break;
		}
	MemoryContextSwitchTo(old);

	/* an earlier run's vacuum did not end: every target's leaves */
	if (st->vacuum_owed)
		relids = run_vacuum_all_targets(st, relids);
	return run_vacuum_page(st, relids);
}

/*
 * The VACUUM (INDEX_CLEANUP ON) statement of the relations that still
 * exist, in the current memory context; *nrels says how many.
 */
static VacuumStmt *
run_vacuum_stmt(List *relids, int *nrels)
{
	List	   *rels = NIL;
	ListCell   *lc;
	VacuumStmt *stmt;

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
	*nrels = list_length(rels);
	return stmt;
}

/*
 * Run the statement.  With anonymize.batch_delay, the vacuum is cost-delayed
 * too, as autovacuum is by default (2 ms a pause, vacuum_cost_limit): a
 * longer pause a vacuum_cost_limit makes it many times slower.
 */
static void
run_vacuum_exec(ParseState *pstate, VacuumStmt *stmt)
{
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

/* Record in run_log that this run (and, when owed, earlier ones) vacuumed. */
static void
run_vacuum_record(RunState *st)
{
	anonymize_xact_begin();
	/* with the vacuum owed, what the earlier runs left is vacuumed too */
	anonymize_run_exec("UPDATE anonymize.run_log SET vacuumed_at = pg_catalog.clock_timestamp()"
					   " WHERE id = $1 OR ($2 AND id < $1 AND vacuumed_at IS NULL)",
					   2, (Oid[]) {INT8OID, BOOLOID},
					   (Datum[]) {Int64GetDatum(st->run_id), BoolGetDatum(st->vacuum_owed)},
					   NULL, SPI_OK_UPDATE);
	anonymize_xact_commit();
}

/*
 * VACUUM (INDEX_CLEANUP ON) what the run touched, so that no dead row
 * version keeps an identifier: as a top-level command, which it is in this
 * background process, each relation in a transaction of its own.
 */
void
anonymize_run_vacuum(RunState *st)
{
	List	   *relids = run_vacuum_relids(st);
	VacuumStmt *stmt;
	ParseState *pstate;
	MemoryContext save;
	MemoryContext old;
	int			nrels;
	bool		whole = st->vacuum_owed;	/* scrub: noted pages unknown */
	AnonymizeScrubStats scrub;

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
	stmt = run_vacuum_stmt(relids, &nrels);
	pstate = make_parsestate(NULL);
	MemoryContextSwitchTo(old);
	anonymize_run_activity(st, "vacuuming %d tables", nrels);
	if (nrels > 0)
		run_vacuum_exec(pstate, stmt);
	CommitTransactionCommand();
	MemoryContextDelete(PortalContext);
	PortalContext = save;

	/* old versions kept by an older snapshot: the next run does it again */
	for (int i = 0; i < st->nreqs; i++)
		whole |= st->resumed[i];
	anonymize_run_reindex_columns();
	if (!anonymize_scrub_run(relids, whole, st->run_id, &scrub))
		return;
	if (!anonymize_run_reindex(st, scrub.rebuild))
		return;
	if (!anonymize_citus_run_vacuum(st))
		return;
	run_vacuum_record(st);
}
