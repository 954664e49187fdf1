/*-------------------------------------------------------------------------
 *
 * anonymize_run_reindex.c
 *	  After the scrub: rebuild the indexes that may still hold an erased
 *	  identifier as a live key (a btree separator or high key, a GIN entry,
 *	  a BRIN range's bounds; see anonymize_scrub_keys.c), with REINDEX
 *	  INDEX CONCURRENTLY, which builds a fresh index from the live rows
 *	  beside the old one, swaps them and drops the old one, without
 *	  blocking the portal's reads and writes.  It runs as a top-level
 *	  command, which it is in this background process.
 *
 *	  It waits for the transactions that use the table, as REINDEX
 *	  CONCURRENTLY does; a rebuild that fails (cancelled, or an error) is
 *	  logged, its leftover invalid copy dropped, and the run does not record
 *	  its vacuum: the next run does the work again (anonymize.rebuild_indexes
 *	  turns the rebuild off).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "anonymize_engine.h"
#include "anonymize_run_private.h"
#include "anonymize_scrub.h"
#include "anonymize_settings.h"
#include "anonymize_xact.h"

/*
 * See anonymize_run_private.h.  Every registered target, from the catalog:
 * a run with nothing to do still owes an earlier run's rebuilds.
 */
void
anonymize_run_reindex_columns(void)
{
	anonymize_xact_begin();
	anonymize_run_exec("SELECT tbl::oid, col::text FROM anonymize.target", 0,
					   NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *col = SPI_getvalue(tup, desc, 2);
		ListCell   *lc;

		foreach(lc, anonymize_target_leaves(relid))
			anonymize_scrub_target_column(lfirst_oid(lc),
										  get_attnum(lfirst_oid(lc), col));
	}
	anonymize_xact_commit();
}

/* REINDEX INDEX CONCURRENTLY schema.name, as a statement of its own. */
static ReindexStmt *
reindex_stmt(const char *nsp, const char *name)
{
	ReindexStmt *stmt = makeNode(ReindexStmt);

	stmt->kind = REINDEX_OBJECT_INDEX;
	stmt->relation = makeRangeVar(pstrdup(nsp), pstrdup(name), -1);
	stmt->params = list_make1(makeDefElem("concurrently", NULL, -1));
	return stmt;
}

/*
 * Run REINDEX INDEX CONCURRENTLY on nsp.name as a top-level command: it
 * commits and starts transactions of its own, and keeps its state under
 * PortalContext, which must outlive them.
 */
static void
reindex_exec(const char *nsp, const char *name)
{
	MemoryContext save = PortalContext;
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext,
											  "anonymize reindex",
											  ALLOCSET_DEFAULT_SIZES);
	int			save_workers = max_parallel_maintenance_workers;

	/*
	 * A member of another process's lock group (the worker of run()) cannot
	 * lead parallel workers: they would wait for its locks forever.
	 */
	if (MyProc->lockGroupLeader != NULL && MyProc->lockGroupLeader != MyProc)
		max_parallel_maintenance_workers = 0;
	PortalContext = cxt;
	PG_TRY();
	{
		MemoryContext old;
		ReindexStmt *stmt;
		ParseState *pstate;

		StartTransactionCommand();
		old = MemoryContextSwitchTo(cxt);
		stmt = reindex_stmt(nsp, name);
		pstate = make_parsestate(NULL);
		MemoryContextSwitchTo(old);
		PushActiveSnapshot(GetTransactionSnapshot());
		ExecReindex(pstate, stmt, true);
		if (ActiveSnapshotSet())
			PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_FINALLY();
	{
		max_parallel_maintenance_workers = save_workers;
		PortalContext = save;
		MemoryContextSwitchTo(caller);
		MemoryContextDelete(cxt);
	}
	PG_END_TRY();
}

/*
 * Drop the invalid copy a failed REINDEX CONCURRENTLY of nsp.name (an
 * index of table heapid) left, "name_ccnew", if there is one: before a
 * rebuild, and after one that failed.  It waits at most a few seconds for
 * its lock; a copy that stays is dropped at the next attempt.
 */
static void
reindex_clean_up(const char *nsp, const char *name, Oid heapid)
{
	char	   *copy = psprintf("%s_ccnew", name);

	if (strlen(copy) >= NAMEDATALEN)
		return;					/* a truncated name: left to the DBA */
	PG_TRY();
	{
		anonymize_xact_begin();
		anonymize_run_exec("SELECT 1 FROM pg_catalog.pg_index i"
						   " JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
						   " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
						   " WHERE c.relname = $1 AND n.nspname = $2"
						   " AND i.indrelid = $3 AND NOT i.indisvalid",
						   3, (Oid[]) {TEXTOID, TEXTOID, OIDOID},
						   (Datum[]) {CStringGetTextDatum(copy),
							   CStringGetTextDatum(nsp), ObjectIdGetDatum(heapid)},
						   NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
		{
			anonymize_run_exec("SET LOCAL lock_timeout = '5s'", 0, NULL, NULL,
							   NULL, SPI_OK_UTILITY);
			anonymize_run_exec(psprintf("DROP INDEX %s",
										quote_qualified_identifier(nsp, copy)),
							   0, NULL, NULL, NULL, SPI_OK_UTILITY);
		}
		anonymize_xact_commit();
	}
	PG_CATCH();
	{
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
}

/*
 * Rebuild index indexid; false, logged, when the rebuild failed.  The log
 * names the index and the error's message, never a key (a message's
 * detail may quote one).
 */
static bool
reindex_one(RunState *st, Oid indexid)
{
	char	   *nsp;
	char	   *name;
	Oid			heapid;
	volatile bool ok = true;

	StartTransactionCommand();
	heapid = IndexGetRelation(indexid, true);
	name = get_rel_name(indexid);
	nsp = name ? get_namespace_name(get_rel_namespace(indexid)) : NULL;
	if (name)
	{
		name = MemoryContextStrdup(st->cxt, name);
		nsp = MemoryContextStrdup(st->cxt, nsp);
	}
	CommitTransactionCommand();
	if (name == NULL)
		return true;			/* dropped meanwhile */
	anonymize_run_activity(st, "rebuilding index %s", name);
	reindex_clean_up(nsp, name, heapid);
	PG_TRY();
	{
		reindex_exec(nsp, name);
		ereport(LOG,
				(errmsg("anonymize run %lld: rebuilt index %s: it could keep an erased identifier as a live key",
						(long long) st->run_id,
						quote_qualified_identifier(nsp, name))));
	}
	PG_CATCH();
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);
		ErrorData  *edata = CopyErrorData();

		MemoryContextSwitchTo(old);
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("anonymize run %lld: could not rebuild index %s: %s",
						(long long) st->run_id,
						quote_qualified_identifier(nsp, name), edata->message),
				 errhint("The next run tries again; REINDEX INDEX CONCURRENTLY %s does the same by hand.",
						 quote_qualified_identifier(nsp, name))));
		reindex_clean_up(nsp, name, heapid);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* See anonymize_run_private.h. */
bool
anonymize_run_reindex(RunState *st, List *indexes)
{
	ListCell   *lc;
	bool		ok = true;

	if (indexes == NIL)
		return true;
	if (!anonymize_rebuild_indexes)
	{
		ereport(LOG,
				(errmsg("anonymize run %lld: %d indexes could keep an erased identifier as a live key; not rebuilt, anonymize.rebuild_indexes is off",
						(long long) st->run_id, list_length(indexes))));
		return true;
	}
	foreach(lc, indexes)
		ok &= reindex_one(st, lfirst_oid(lc));
	return ok;
}
