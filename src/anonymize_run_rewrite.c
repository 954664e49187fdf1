/*-------------------------------------------------------------------------
 *
 * anonymize_run_rewrite.c
 *	  The rows of one rewrite batch, updated at the C level: each matching
 *	  row fetched again by its TID, rechecked, and updated with its index
 *	  entries, as logical replication's apply does
 *	  (ExecSimpleRelationUpdate()), without planning or executing SQL.
 *
 * What a row gets is what the SQL UPDATE of the run wrote before: the
 * target's replacement converted to the column's type (its length, its
 * domain's checks), or NULL (the domain's NOT NULL); stored generated
 * columns computed again; the table's NOT NULL, CHECK and partition
 * constraints checked; new index entries where the update needs them.
 * No trigger or rule fires: the run writes as logical replication's apply
 * does with session_replication_role = replica, whose ENABLE ALWAYS and
 * ENABLE REPLICA triggers and rules anonymize._target_check() refuses
 * before the first batch.  A row that changed since the scan (updated or
 * deleted, or holding another value) is left as it is, as the UPDATE by
 * TID left it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/sysattr.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "nodes/makefuncs.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "anonymize_compat.h"
#include "anonymize_run_private.h"
#include "anonymize_scrub.h"
#include "anonymize_settings.h"
#include "anonymize_throttle.h"

/* one batch's relation, executor state and slots */
typedef struct RewriteState
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *oldslot;	/* the row as fetched */
	TupleTableSlot *newslot;	/* the row as written */
	AttrNumber	idatt;			/* the target column in this leaf */
	BlockNumber nblocks;		/* a TID beyond is not a row */
	bool		have_value;		/* value computed (at the first row) */
	Datum		value;			/* what the column gets */
	bool		value_null;
} RewriteState;

/* The stored generated columns of rel, offset as in a range table entry. */
static Bitmapset *
rewrite_generated_cols(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Bitmapset  *cols = NULL;

	for (int i = 0; i < desc->natts; i++)
		if (TupleDescAttr(desc, i)->attgenerated == ATTRIBUTE_GENERATED_STORED)
			cols = bms_add_member(cols, i + 1 - FirstLowInvalidHeapAttributeNumber);
	return cols;
}

/*
 * Open leaf for the batch: its lock, an executor state whose range table
 * is the leaf with the target column updated, its indexes, the slots.
 */
static void
rewrite_open(RewriteState *rs, AnonymizeTarget *target, Oid leaf)
{
	RangeTblEntry *rte;

	memset(rs, 0, sizeof(*rs));
	rs->rel = table_open(leaf, RowExclusiveLock);
	rs->idatt = get_attnum(leaf, target->col);
	if (rs->idatt == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("a column of target %s is missing from table \"%s\"",
						target->name, RelationGetRelationName(rs->rel)),
				 errhint("Re-register the target with anonymize.add_target() or remove it with anonymize.remove_target().")));
	CheckCmdReplicaIdentity(rs->rel, CMD_UPDATE);
	rs->nblocks = RelationGetNumberOfBlocks(rs->rel);

	rs->estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = leaf;
	rte->relkind = rs->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	anonymize_exec_range_table(rs->estate, rte,
							   bms_make_singleton(rs->idatt - FirstLowInvalidHeapAttributeNumber),
							   rewrite_generated_cols(rs->rel));
	rs->estate->es_output_cid = GetCurrentCommandId(true);
	rs->estate->es_snapshot = GetActiveSnapshot();
	rs->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rs->rri, rs->rel, 1, NULL, 0);
	ExecOpenIndices(rs->rri, false);
	rs->oldslot = table_slot_create(rs->rel, &rs->estate->es_tupleTable);
	rs->newslot = ExecInitExtraTupleSlot(rs->estate, RelationGetDescr(rs->rel),
										 &TTSOpsVirtual);
}

/* Close what rewrite_open() opened; the lock stays to the commit. */
static void
rewrite_close(RewriteState *rs)
{
	ExecCloseIndices(rs->rri);
	ExecResetTupleTable(rs->estate->es_tupleTable, false);
	FreeExecutorState(rs->estate);
	table_close(rs->rel, NoLock);
}

/*
 * What target's matching rows get, as text: its own replacement, else
 * anonymize.replacement; NULL when it erases to NULL.
 */
char *
anonymize_run_replacement(AnonymizeTarget *target)
{
	if (target->erase_null)
		return NULL;
	return target->replacement ? target->replacement : anonymize_replacement;
}

/*
 * What the column gets, through its type's input function as an
 * assignment would: the replacement (a varchar(n) too short, a domain's
 * CHECK: an error), or NULL (a domain's NOT NULL: an error).  Computed at
 * the first row rewritten, so that a batch that rewrites nothing fails on
 * nothing, as the UPDATE did.
 */
static void
rewrite_value(RewriteState *rs, AnonymizeTarget *target)
{
	Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rs->rel), rs->idatt - 1);
	Oid			typinput;
	Oid			typioparam;
	char	   *str = anonymize_run_replacement(target);

	getTypeInputInfo(att->atttypid, &typinput, &typioparam);
	rs->value = OidInputFunctionCall(typinput, str, typioparam, att->atttypmod);
	rs->value_null = (str == NULL);
	rs->have_value = true;
}

/* Fill the new slot: the old row with the target column's new value. */
static void
rewrite_new_row(RewriteState *rs)
{
	TupleTableSlot *old = rs->oldslot;
	TupleTableSlot *new = rs->newslot;
	int			natts = old->tts_tupleDescriptor->natts;

	ExecClearTuple(new);
	slot_getallattrs(old);
	memcpy(new->tts_values, old->tts_values, sizeof(Datum) * natts);
	memcpy(new->tts_isnull, old->tts_isnull, sizeof(bool) * natts);
	new->tts_values[rs->idatt - 1] = rs->value;
	new->tts_isnull[rs->idatt - 1] = rs->value_null;
	ExecStoreVirtualTuple(new);
}

/*
 * Rewrite the row at tid if it still holds an identifier of request r:
 * true when it was rewritten.
 */
static bool
rewrite_row(RewriteState *rs, AnonymizeTarget *target, ItemPointer tid,
			const AnonymizeRequest *r)
{
	Relation	rel = rs->rel;
	TM_FailureData tmfd;
	LockTupleMode lockmode;
	AnonymizeUpdateIndexes update_indexes;
	TM_Result	result;

	/* gone since the scan (the table cannot shrink under our lock now) */
	if (ItemPointerGetBlockNumber(tid) >= rs->nblocks ||
		!table_tuple_fetch_row_version(rel, tid, rs->estate->es_snapshot,
									   rs->oldslot))
		return false;
	if (!anonymize_engine_recheck_row(target, rs->oldslot, rs->idatt, r))
		return false;
	if (!rs->have_value)
		rewrite_value(rs, target);
	rewrite_new_row(rs);
	if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rs->rri, rs->estate, rs->newslot, CMD_UPDATE);
	if (rel->rd_att->constr)
		ExecConstraints(rs->rri, rs->newslot, rs->estate);
	if (rel->rd_rel->relispartition)
		ExecPartitionCheck(rs->rri, rs->newslot, rs->estate, true);

	result = table_tuple_update(rel, tid, rs->newslot, rs->estate->es_output_cid,
								rs->estate->es_snapshot, InvalidSnapshot,
								true, &tmfd, &lockmode, &update_indexes);
	if (result == TM_SelfModified)
		elog(ERROR, "anonymize run: a row was rewritten twice in a batch");
	if (result != TM_Ok)
		return false;			/* changed by another transaction meanwhile */
	if (rs->rri->ri_NumIndices > 0 && !anonymize_no_index_update(update_indexes))
		list_free(anonymize_insert_index_tuples(rs->rri, rs->newslot, rs->estate,
												update_indexes));
	return true;
}

/*
 * Note for the scrub the pages that the rows matches[from..from+n) of one
 * target in one leaf leave behind when rewritten (their versions, index
 * entries and TOAST values), before the rewrite, in the current
 * transaction.
 */
void
anonymize_run_note_rows(RunState *st, AnonymizeTarget *target, Oid leaf,
						int64 from, int n)
{
	Datum	   *tids = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		tids[i] = PointerGetDatum(&st->matches[from + i].tid);
	anonymize_scrub_note_rows(leaf, target->col, tids, n);
	pfree(tids);
}

/*
 * Rewrite matches[from..from+n) of one target in one leaf, in the current
 * transaction, counting the rows rewritten per request (ids[i], sorted ->
 * rcount[i]).  Returns how many rows it rewrote.
 */
int64
anonymize_run_rewrite_rows(RunState *st, AnonymizeTarget *target, Oid leaf,
						   int64 from, int n, const int *ids, int nids,
						   int64 *rcount)
{
	RewriteState rs;
	int64		rewritten = 0;

	rewrite_open(&rs, target, leaf);
	for (int i = 0; i < n; i++)
	{
		RunMatch   *m = &st->matches[from + i];
		const int  *pos;

		CHECK_FOR_INTERRUPTS();
		anonymize_throttle_point();
		ResetPerTupleExprContext(rs.estate);
		if (!rewrite_row(&rs, target, &m->tid, &st->reqs[m->req]))
			continue;
		rewritten++;
		pos = bsearch(&m->req, ids, nids, sizeof(int), anonymize_run_cmp_int);
		if (pos)
			rcount[pos - ids]++;
	}
	rewrite_close(&rs);
	return rewritten;
}
