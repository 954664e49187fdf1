/*-------------------------------------------------------------------------
 *
 * anonymize_run_vacuum.c
 *	  The last step of a run: VACUUM of what it touched, so that no dead
 *	  row version keeps an identifier, then vacuumed_at in
 *	  anonymize.run_log.
 *
 * What is vacuumed: the leaves the run rewrote; every leaf it scanned when
 * it resumed requests a killed run left (their earlier batches may have
 * left dead versions); every target's leaves when an earlier run's vacuum
 * never ended (run_log.vacuumed_at NULL); the page and request_private
 * always.  The vacuum runs as a top-level command, which it is in this
 * background process, each relation in a transaction of its own, with
 * INDEX_CLEANUP ON only for the tables with an index that may hold a
 * rewritten value (run_vacuum_index_pass()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/genam.h"
#include "access/relation.h"
#include "access/sysattr.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "commands/vacuum.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_node.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"

#include "anonymize_request.h"
#include "anonymize_run_private.h"
#include "anonymize_scrub.h"
#include "anonymize_settings.h"
#include "anonymize_throttle.h"
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

/* The target columns the run knows on relid (a leaf of those targets). */
static Bitmapset *
run_vacuum_target_cols(RunState *st, Oid relid)
{
	Bitmapset  *cols = NULL;

	for (int i = 0; i < st->ntargets; i++)
	{
		AnonymizeTarget *t = &st->targets[i];
		AttrNumber	att;

		if (!list_member_oid(anonymize_target_leaves(t->relid), relid))
			continue;
		att = get_attnum(relid, t->col);
		if (att != InvalidAttrNumber)
			cols = bms_add_member(cols, att - FirstLowInvalidHeapAttributeNumber);
	}
	return cols;
}

/*
 * Whether the index may hold bytes of the columns cols (offset by
 * FirstLowInvalidHeapAttributeNumber): a key, an expression or the
 * predicate over one of them, or over the whole row.  A hash index stores
 * hash codes, never a value.
 */
static bool
run_vacuum_index_holds(Relation index, Bitmapset *cols)
{
	Bitmapset  *used = NULL;
	Form_pg_index form = index->rd_index;

	if (index->rd_rel->relam == HASH_AM_OID)
		return false;
	for (int k = 0; k < form->indnatts; k++)
	{
		AttrNumber	att = form->indkey.values[k];

		if (att != 0)
			used = bms_add_member(used, att - FirstLowInvalidHeapAttributeNumber);
	}
	pull_varattnos((Node *) RelationGetIndexExpressions(index), 1, &used);
	pull_varattnos((Node *) RelationGetIndexPredicate(index), 1, &used);
	return bms_overlap(used, cols) ||
		bms_is_member(InvalidAttrNumber - FirstLowInvalidHeapAttributeNumber, used);
}

/*
 * Whether VACUUM must make its index pass over relid for the run's
 * promise: some index of it may hold a rewritten value (an index on a
 * target column or an expression of it; a stored generated column counts
 * as one, since it may be computed from the identifier).  A table the run
 * does not know as a target (the page, request_private, a table only the
 * retention rewrote) gets it too.  An index that holds no identifier still
 * points to the dead row versions, whose storage the vacuum frees: a later
 * vacuum (autovacuum) removes those entries.
 */
static bool
run_vacuum_index_pass(RunState *st, Oid relid)
{
	Bitmapset  *cols = run_vacuum_target_cols(st, relid);
	Relation	rel;
	List	   *indexes;
	ListCell   *lc;
	bool		pass = false;

	if (cols == NULL)
		return true;
	rel = try_table_open(relid, AccessShareLock);
	if (rel == NULL)
		return true;
	for (int i = 0; i < RelationGetDescr(rel)->natts; i++)
		if (TupleDescAttr(RelationGetDescr(rel), i)->attgenerated)
			cols = bms_add_member(cols, i + 1 - FirstLowInvalidHeapAttributeNumber);
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);

		pass |= run_vacuum_index_holds(index, cols);
		index_close(index, AccessShareLock);
		if (pass)
			break;
	}
	table_close(rel, AccessShareLock);
	return pass;
}

/*
 * A VACUUM statement of the relations rels, with INDEX_CLEANUP on or off,
 * in the current memory context.
 */
static VacuumStmt *
run_vacuum_make(List *rels, bool index_cleanup)
{
	VacuumStmt *stmt = makeNode(VacuumStmt);

	stmt->options = list_make1(makeDefElem("index_cleanup",
										   (Node *) makeString(index_cleanup ? "on" : "off"),
										   -1));

	/*
	 * A member of another process's lock group (the worker of run()) cannot
	 * lead parallel workers: they would wait for its locks forever.
	 * Otherwise VACUUM vacuums the indexes of a table that has several with
	 * parallel workers (max_parallel_maintenance_workers).
	 */
	if (MyProc->lockGroupLeader != NULL && MyProc->lockGroupLeader != MyProc)
		stmt->options = lappend(stmt->options,
								makeDefElem("parallel", (Node *) makeInteger(0), -1));
	stmt->rels = rels;
	stmt->is_vacuumcmd = true;
	return stmt;
}

/*
 * The VACUUM statements of the relations that still exist, in the current
 * memory context: stmts[0] with INDEX_CLEANUP ON, stmts[1] OFF (NULL when
 * it has no relation); *nrels says how many relations in all.
 */
static void
run_vacuum_stmts(RunState *st, List *relids, VacuumStmt **stmts, int *nrels)
{
	List	   *rels[2] = {NIL, NIL};
	ListCell   *lc;

	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);
		char	   *nsp;
		char	   *name;
		int			which;

		name = get_rel_name(relid);
		if (name == NULL)
			continue;			/* dropped meanwhile */
		nsp = get_namespace_name(get_rel_namespace(relid));
		which = run_vacuum_index_pass(st, relid) ? 0 : 1;
		rels[which] = lappend(rels[which],
							  makeVacuumRelation(makeRangeVar(nsp, name, -1),
												 relid, NIL));
	}
	*nrels = list_length(rels[0]) + list_length(rels[1]);
	for (int i = 0; i < 2; i++)
		stmts[i] = rels[i] != NIL ? run_vacuum_make(rels[i], i == 0) : NULL;
}

/*
 * Run the statement with the run's throttle (anonymize.cost_delay and
 * anonymize.cost_limit) as its cost-based delay, as autovacuum uses its
 * own settings, and at the run's CPU priority (anonymize.run_nice), in
 * this process and in the parallel workers of its index pass.  The
 * throttle goes to VACUUM as this session's vacuum_cost_delay and
 * vacuum_cost_limit, not by assigning their variables: VACUUM's parallel
 * workers restore the settings of the process that starts them, and a
 * setting still at its default source is not passed on, so workers of a
 * VACUUM throttled through the variables alone vacuumed at full speed.
 */
static void
run_vacuum_exec(ParseState *pstate, VacuumStmt *stmt)
{
	char		delay[32];
	char		limit[16];

	snprintf(delay, sizeof(delay), "%g", anonymize_cost_delay);
	snprintf(limit, sizeof(limit), "%d", anonymize_cost_limit);
	SetConfigOption("vacuum_cost_delay", delay, PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("vacuum_cost_limit", limit, PGC_SUSET, PGC_S_SESSION);
	anonymize_throttle_nice();
	PG_TRY();
	{
		ExecVacuum(pstate, stmt, true);
	}
	PG_FINALLY();
	{
		/* back to the server's: the process's other work is not throttled */
		SetConfigOption("vacuum_cost_delay", NULL, PGC_SUSET, PGC_S_SESSION);
		SetConfigOption("vacuum_cost_limit", NULL, PGC_SUSET, PGC_S_SESSION);
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
 * VACUUM what the run touched, so that no dead row version keeps an
 * identifier: as a top-level command, which it is in this
 * background process, each relation in a transaction of its own.
 */
void
anonymize_run_vacuum(RunState *st)
{
	List	   *relids = run_vacuum_relids(st);
	VacuumStmt *stmts[2];
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
	run_vacuum_stmts(st, relids, stmts, &nrels);
	pstate = make_parsestate(NULL);
	MemoryContextSwitchTo(old);
	anonymize_run_activity(st, "vacuuming %d tables", nrels);
	if (stmts[1] != NULL)
		ereport(LOG,
				(errmsg("anonymize run %lld: vacuuming %d tables, %d of them without the index pass (no index of theirs holds a rewritten column)",
						(long long) st->run_id, nrels, list_length(stmts[1]->rels))));
	for (int i = 0; i < 2; i++)
		if (stmts[i] != NULL)
		{
			run_vacuum_exec(pstate, stmts[i]);
			/* ExecVacuum() ends in a transaction of its own */
		}
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
