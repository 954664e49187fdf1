/*-------------------------------------------------------------------------
 *
 * anonymize_run_target.c
 *	  What the run does about one target besides scanning it: checks,
 *	  before rewriting, that what it writes is still accepted (the checks
 *	  of add_target(): a constraint or a firing trigger added after
 *	  registration), fails the requests that a target it cannot rewrite
 *	  concerns, and refreshes the materialized views that copy the targets
 *	  it rewrote.
 *
 * A failed target never stops the run: its requests become Failed with
 * the table and the reason (never an identifier), the batches committed
 * before keep their receipts, and the other targets and requests go on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "anonymize_citus.h"
#include "anonymize_run_private.h"
#include "anonymize_settings.h"
#include "anonymize_xact.h"

/* the requests a failed target's rows still match: a flag per request */
typedef struct RunFailArg
{
	bool	   *hit;
} RunFailArg;

/* Is this error about what the run writes into a target (not the run)? */
bool
anonymize_run_target_error(int sqlerrcode)
{
	/* not a lock timeout or an object in use (55P03, 55006): transient */
	if (sqlerrcode == ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE)
		return true;
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_DATA_EXCEPTION:
		case ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION:
		case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION:
		case ERRCODE_FEATURE_NOT_SUPPORTED:
			return true;
	}
	return false;
}

/*
 * In the PG_CATCH of a step that writes into a target: an error about
 * what the run writes there (anonymize_run_target_error()) aborts the
 * transaction and its message is returned, copied into keep, the run
 * going on outside any transaction; any other error is thrown again, in
 * cxt.  keep must outlive the transaction: cxt may be the step's (SPI's
 * context), which the abort frees.
 */
char *
anonymize_run_target_caught(MemoryContext keep, MemoryContext cxt)
{
	ErrorData  *edata;
	char	   *reason;

	MemoryContextSwitchTo(keep);
	edata = CopyErrorData();
	if (!anonymize_run_target_error(edata->sqlerrcode))
	{
		FreeErrorData(edata);
		MemoryContextSwitchTo(cxt);
		PG_RE_THROW();
	}
	FlushErrorState();
	AbortCurrentTransaction();
	reason = pstrdup(edata->message);
	FreeErrorData(edata);
	return reason;
}

/*
 * In the PG_CATCH of a step that writes into target t: a target error
 * (anonymize_run_target_caught()) fails the target with its message.
 */
void
anonymize_run_catch_target(RunState *st, int t, MemoryContext cxt)
{
	char	   *reason = anonymize_run_target_caught(st->cxt, cxt);

	anonymize_run_fail_target(st, t, reason);
	pfree(reason);
}

/* Does the installed schema have this function (1.1 and later)? */
static bool
run_schema_has(const char *signature)
{
	bool		isnull;

	anonymize_run_exec("SELECT pg_catalog.to_regprocedure($1) IS NOT NULL",
					   1, (Oid[]) {TEXTOID},
					   (Datum[]) {CStringGetTextDatum(signature)},
					   NULL, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * anonymize._target_check() for target t, in a subtransaction of the
 * current transaction: NULL when the run may rewrite it, else why not.
 */
static char *
run_target_check_reason(RunState *st, AnonymizeTarget *t)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile reason = NULL;
	Oid			types[5] = {OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', t->replacement ? ' ' : 'n'};

	values[0] = ObjectIdGetDatum(t->relid);
	values[1] = CStringGetTextDatum(t->col);
	values[2] = CStringGetTextDatum((t->kind & ANONYMIZE_KIND_PHONE_BIT) ?
									((t->kind & ANONYMIZE_KIND_EMAIL_BIT) ?
									 "phone_or_email" : "phone") : "email");
	values[3] = CStringGetTextDatum(t->erase_null ? "null" : "replace");
	values[4] = t->replacement ? CStringGetTextDatum(t->replacement) : (Datum) 0;

	/* the 1.0 schema, before ALTER EXTENSION UPDATE: no check to make */
	if (!run_schema_has("anonymize._target_check(regclass,name,text,text,text)"))
		return NULL;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		anonymize_run_exec("SELECT anonymize._target_check($1::regclass, $2::name, $3, $4, $5)",
						   5, types, values, nulls, SPI_OK_SELECT);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		/* a cancel, a shutdown: the run's, not the target's */
		if (!anonymize_run_target_error(edata->sqlerrcode))
			ReThrowError(edata);
		reason = MemoryContextStrdup(st->cxt, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return reason;
}

/*
 * Before the first rewrite of target t in this run: may the run still
 * write into it?  When not, fail its requests and say no.  Call outside
 * a transaction.
 */
bool
anonymize_run_target_usable(RunState *st, int t)
{
	char	   *reason;

	if (st->tfailed[t] != NULL)
		return false;
	if (st->tchecked[t])
		return true;
	anonymize_xact_begin();
	reason = run_target_check_reason(st, &st->targets[t]);
	anonymize_xact_commit();
	st->tchecked[t] = true;
	if (reason == NULL)
		return true;
	anonymize_run_fail_target(st, t, reason);
	return false;
}

/* The engine's callback of a failed target: flag the requests matched. */
static void
run_fail_match(void *arg, Oid leaf, ItemPointer tid, const int *reqs, int nreqs)
{
	RunFailArg *fa = (RunFailArg *) arg;

	for (int i = 0; i < nreqs; i++)
		fa->hit[reqs[i]] = true;
}

/* Flag the active requests that rows of target t still match. */
static void
run_fail_scan(RunState *st, AnonymizeTarget *target, bool *hit)
{
	AnonymizeMatchSet *ms;
	RunFailArg	fa = {hit};
	ListCell   *lc;

	anonymize_xact_begin();
	if (anonymize_citus_table(target->relid))
	{
		/* the rows are on the shards: count them there */
		anonymize_citus_run_fail_count(st, target, hit);
		anonymize_xact_commit();
		return;
	}
	ms = anonymize_matchset_build(st->reqs, st->nreqs, target->kind,
								  target->scope);
	if (anonymize_matchset_size(ms) > 0)
		foreach(lc, anonymize_target_leaves(target->relid))
		{
			Relation	rel = try_table_open(lfirst_oid(lc), AccessShareLock);

			if (rel == NULL)
				continue;
			if (anonymize_leaf_may_match(ms, target, rel))
				anonymize_engine_scan(ms, target, rel, run_fail_match, &fa);
			table_close(rel, AccessShareLock);
		}
	anonymize_xact_commit();
}

/*
 * Target t cannot be rewritten (reason: the error, which names the table
 * and the constraint or trigger): every active request that its rows
 * still match becomes Failed, with the target and the reason.  Rows
 * already rewritten no longer match, so a request whose rows there were
 * all rewritten by earlier batches goes on.  Call outside a transaction.
 */
void
anonymize_run_fail_target(RunState *st, int t, const char *reason)
{
	AnonymizeTarget *target = &st->targets[t];
	bool	   *hit = MemoryContextAllocZero(st->cxt, sizeof(bool) * st->nreqs);
	int64	   *ids = MemoryContextAlloc(st->cxt, sizeof(int64) * Max(st->nreqs, 1));
	int			n = 0;
	char	   *error;
	Datum		values[2];

	st->tfailed[t] = MemoryContextStrdup(st->cxt, reason);
	run_fail_scan(st, target, hit);
	/*
	 * A late request (the ledger's) stays: it was Done, and goes on with
	 * the other targets; the ledger checks this one again in full next time.
	 */
	for (int i = 0; i < st->nreqs; i++)
		if (hit[i] && st->reqs[i].active && !st->reqs[i].late)
		{
			st->reqs[i].active = false;
			ids[n++] = st->reqs[i].id;
		}
	ereport(WARNING,
			(errmsg("anonymize run %lld: target %s (column %s) cannot be rewritten: %s",
					(long long) st->run_id, target->name, target->col, reason),
			 errdetail("%d requests failed.", n)));
	if (n > 0)
	{
		error = psprintf("target %s (column %s) cannot be rewritten: %s",
						 target->name, target->col, reason);
		values[0] = PointerGetDatum(anonymize_run_int8_array(ids, n));
		values[1] = CStringGetTextDatum(error);
		anonymize_xact_begin();
		anonymize_run_page_write_begin();
		anonymize_run_exec("WITH f AS ("
						   " UPDATE anonymize.anonymize_request SET status = 'Failed', error = $2"
						   " WHERE id = ANY ($1) AND status = 'Running' RETURNING id)"
						   " INSERT INTO anonymize.request_log (request_id, event, status, detail)"
						   " SELECT id, 'status', 'Failed', $2 FROM f",
						   2, (Oid[]) {INT8ARRAYOID, TEXTOID}, values, NULL,
						   SPI_OK_INSERT);
		st->result->requests_failed += SPI_processed;
		anonymize_run_page_write_end();
		anonymize_xact_commit();
	}
	pfree(hit);
	pfree(ids);
}

/*
 * Refresh one materialized view in a transaction of its own, CONCURRENTLY
 * when it allows it; returns whether it was concurrent.  *qname: its
 * name, in the run's memory.
 */
static bool
run_refresh_xact(RunState *st, Oid mv, char **qname)
{
	char	   *name;
	bool		concurrent = false;

	anonymize_xact_begin();
	name = get_rel_name(mv);
	if (name != NULL)
	{
		name = quote_qualified_identifier(get_namespace_name(get_rel_namespace(mv)),
										  name);
		*qname = MemoryContextStrdup(st->cxt, name);
		anonymize_run_exec("SELECT c.relispopulated AND EXISTS (SELECT FROM pg_catalog.pg_index i"
						   " WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate"
						   " AND i.indpred IS NULL AND i.indexprs IS NULL)"
						   " FROM pg_catalog.pg_class c WHERE c.oid = $1",
						   1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(mv)},
						   NULL, SPI_OK_SELECT);
		if (SPI_processed == 1)
		{
			bool		isnull;

			concurrent = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1,
													&isnull));
		}
		anonymize_run_activity(st, "refreshing materialized view %s", name);
		anonymize_run_exec(psprintf("REFRESH MATERIALIZED VIEW %s%s",
									concurrent ? "CONCURRENTLY " : "", name),
						   0, NULL, NULL, NULL, SPI_OK_UTILITY);
	}
	anonymize_xact_commit();
	return concurrent;
}

/*
 * Refresh one materialized view.  A refresh that fails (its query, its
 * unique index) is a WARNING with the message only, never the run's
 * failure: the requests are done already.
 */
static void
run_refresh_one(RunState *st, Oid mv)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool concurrent = false;
	char	   *volatile qname = NULL;

	PG_TRY();
	{
		concurrent = run_refresh_xact(st, mv, (char **) &qname);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION)
			PG_RE_THROW();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(WARNING,
				(errmsg("anonymize run %lld: could not refresh materialized view %s: %s",
						(long long) st->run_id, qname ? qname : "(dropped)",
						edata->message),
				 errhint("It keeps the values it had before the run until it is refreshed.")));
		FreeErrorData(edata);
		return;
	}
	PG_END_TRY();

	/* a concurrent refresh leaves the old rows dead in it: vacuum them */
	if (concurrent && !list_member_oid(st->touched, mv))
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		st->touched = lappend_oid(st->touched, mv);
		MemoryContextSwitchTo(old);
	}
}

/*
 * With anonymize.refresh_materialized_views: refresh the materialized
 * views that read the targets from index first on that this run
 * rewrote, in dependency order, each in a transaction of its own.
 */
void
anonymize_run_refresh_matviews(RunState *st, int first)
{
	List	   *mvs = NIL;
	ListCell   *lc;

	if (!anonymize_refresh_materialized_views)
		return;
	anonymize_xact_begin();
	/* the 1.0 schema, before ALTER EXTENSION UPDATE: not listed yet */
	if (!run_schema_has("anonymize._target_matviews(regclass)"))
		first = st->ntargets;
	for (int t = first; t < st->ntargets; t++)
	{
		bool		rewritten = false;
		ArrayType  *arr;
		Datum	   *elems;
		int			nelems;
		bool		isnull;

		for (int i = 0; i < st->nreqs / 8 + 1 && !rewritten; i++)
			rewritten = st->trows[t][i] != 0;
		if (!rewritten)
			continue;
		anonymize_run_exec("SELECT anonymize._target_matviews($1::regclass)::oid[]",
						   1, (Oid[]) {OIDOID},
						   (Datum[]) {ObjectIdGetDatum(st->targets[t].relid)},
						   NULL, SPI_OK_SELECT);
		arr = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		deconstruct_array(arr, OIDOID, sizeof(Oid), true, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		for (int i = 0; i < nelems; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			mvs = list_append_unique_oid(mvs, DatumGetObjectId(elems[i]));
			MemoryContextSwitchTo(old);
		}
	}
	anonymize_xact_commit();
	foreach(lc, mvs)
		run_refresh_one(st, lfirst_oid(lc));
	list_free(mvs);
}
