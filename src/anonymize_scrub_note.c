/*-------------------------------------------------------------------------
 *
 * anonymize_scrub_note.c
 *	  Before a batch rewrites its rows: note the pages that hold their old
 *	  versions, so that the scrub after the vacuum visits those and no
 *	  others.  The heap pages come from the row's TID; the TOAST chunks of
 *	  its out-of-line values from the TOAST index (value id); a btree
 *	  entry's leaf page and its parents from a descent with the old key and
 *	  the TID (the heap TID is part of the key of a version 4 btree, so the
 *	  descent ends on the one leaf that holds the entry).  A split after the
 *	  noting moves entries to a new right sibling: the scrub follows right
 *	  links from a noted leaf over pages changed since the run began.
 *	  The notes are bounded (SCRUB_NOTE_BUDGET): past it, a relation is
 *	  read whole instead.
 *
 *	  Other index methods cannot be searched by key for a page: the scrub
 *	  reads them whole and keeps to the pages the run changed (LSN), see
 *	  anonymize_scrub.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/heaptoast.h"
#include "access/nbtree.h"
#include "access/skey.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/toast_internals.h"
#include "access/xlog.h"
#include "catalog/index.h"
#include "catalog/pg_am_d.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "optimizer/optimizer.h"
#include "portability/instr_time.h"
#include "fmgr.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "anonymize_compat.h"
#include "anonymize_scrub.h"
#include "anonymize_scrub_int.h"

ScrubState *scrub_state = NULL;

/* The run's context is gone (the run ended or failed): no notes. */
static void
scrub_forget(void *arg)
{
	scrub_state = NULL;
}

/* Start a run's noting: an empty list of relations. */
void
anonymize_scrub_begin(MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	MemoryContextCallback *cb = palloc0(sizeof(MemoryContextCallback));

	scrub_state = palloc0(sizeof(ScrubState));
	scrub_state->cxt = cxt;
	scrub_state->since = RecoveryInProgress() ? InvalidXLogRecPtr
		: GetXLogInsertRecPtr();
	cb->func = scrub_forget;
	MemoryContextRegisterResetCallback(cxt, cb);
	MemoryContextSwitchTo(old);
}

/* Is a run noting pages for the scrub in this process? */
bool
anonymize_scrub_noting(void)
{
	return scrub_state != NULL;
}

/* The noted pages of relid, made on first use. */
ScrubRel *
scrub_rel(Oid relid, bool create)
{
	ListCell   *lc;
	ScrubRel   *sr;
	MemoryContext old;

	foreach(lc, scrub_state->rels)
	{
		sr = lfirst(lc);
		if (sr->relid == relid)
			return sr;
	}
	if (!create)
		return NULL;
	old = MemoryContextSwitchTo(scrub_state->cxt);
	sr = palloc0(sizeof(ScrubRel));
	sr->relid = relid;
	scrub_state->rels = lappend(scrub_state->rels, sr);
	MemoryContextSwitchTo(old);
	return sr;
}

/*
 * Room for n more bytes of notes of sr: false, its notes dropped and sr
 * read whole instead, when the budget is spent.
 */
static bool
scrub_budget(ScrubRel *sr, Size n)
{
	if (sr->whole)
		return false;
	if (scrub_state->bytes + n <= SCRUB_NOTE_BUDGET)
	{
		scrub_state->bytes += n;
		return true;
	}
	scrub_state->bytes -= sizeof(ItemPointerData) * sr->maxtids +
		sizeof(BlockNumber) * sr->maxblocks + sizeof(uint64) * sr->maxkeys;
	if (sr->tids)
		pfree(sr->tids);
	if (sr->blocks)
		pfree(sr->blocks);
	if (sr->keys)
		pfree(sr->keys);
	sr->tids = NULL;
	sr->blocks = NULL;
	sr->keys = NULL;
	sr->ntids = sr->maxtids = sr->nblocks = sr->maxblocks = 0;
	sr->nkeys = sr->maxkeys = 0;
	sr->whole = true;
	return false;
}

/* Add a TID (heap: the old version; TOAST: a chunk). */
static void
scrub_add_tid(ScrubRel *sr, ItemPointer tid)
{
	if (sr->ntids == sr->maxtids)
	{
		int			more = Max(64, sr->maxtids);

		if (!scrub_budget(sr, sizeof(ItemPointerData) * more))
			return;
		sr->maxtids += more;
		sr->tids = sr->tids
			? repalloc(sr->tids, sizeof(ItemPointerData) * sr->maxtids)
			: MemoryContextAlloc(scrub_state->cxt,
								 sizeof(ItemPointerData) * sr->maxtids);
	}
	sr->tids[sr->ntids++] = *tid;
}

/* Add the hash of an old key's value (btree). */
static void
scrub_add_key(ScrubRel *sr, uint64 hash)
{
	if (sr->nkeys == sr->maxkeys)
	{
		int			more = Max(64, sr->maxkeys);

		if (!scrub_budget(sr, sizeof(uint64) * more))
			return;
		sr->maxkeys += more;
		sr->keys = sr->keys
			? repalloc(sr->keys, sizeof(uint64) * sr->maxkeys)
			: MemoryContextAlloc(scrub_state->cxt,
								 sizeof(uint64) * sr->maxkeys);
	}
	sr->keys[sr->nkeys++] = hash;
}

/* qsort order of block numbers. */
static int
scrub_cmp_block(const void *a, const void *b)
{
	BlockNumber x = *(const BlockNumber *) a;
	BlockNumber y = *(const BlockNumber *) b;

	return (x > y) - (x < y);
}

/* Sort sr's blocks and drop the duplicates. */
void
scrub_sort_blocks(ScrubRel *sr)
{
	int			n = 0;

	qsort(sr->blocks, sr->nblocks, sizeof(BlockNumber), scrub_cmp_block);
	for (int i = 0; i < sr->nblocks; i++)
		if (n == 0 || sr->blocks[i] != sr->blocks[n - 1])
			sr->blocks[n++] = sr->blocks[i];
	sr->nblocks = n;
}

/*
 * Add a block (btree: a leaf or a parent on the way to it).  Parents
 * repeat for every key: a full array is first rid of its duplicates.
 */
static void
scrub_add_block(ScrubRel *sr, BlockNumber blkno)
{
	if (sr->nblocks > 0 && sr->blocks[sr->nblocks - 1] == blkno)
		return;
	if (sr->nblocks == sr->maxblocks && sr->nblocks > 0)
		scrub_sort_blocks(sr);
	if (sr->nblocks == sr->maxblocks ||
		sr->nblocks >= sr->maxblocks / 2 + sr->maxblocks / 4)
	{
		int			more = Max(64, sr->maxblocks);

		if (!scrub_budget(sr, sizeof(BlockNumber) * more))
			return;
		sr->maxblocks += more;
		sr->blocks = sr->blocks
			? repalloc(sr->blocks, sizeof(BlockNumber) * sr->maxblocks)
			: MemoryContextAlloc(scrub_state->cxt,
								 sizeof(BlockNumber) * sr->maxblocks);
	}
	sr->blocks[sr->nblocks++] = blkno;
}

/* The chunks of one out-of-line value, found through the TOAST index. */
static void
scrub_note_toast_value(Oid toastrelid, Oid valueid)
{
	Relation	toastrel = table_open(toastrelid, AccessShareLock);
	Relation   *toastidxs;
	int			nidx;
	int			valid;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	ScrubRel   *sr = scrub_rel(toastrelid, true);

	valid = toast_open_indexes(toastrel, AccessShareLock, &toastidxs, &nidx);
	ScanKeyInit(&key, (AttrNumber) 1, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(valueid));
	/* every version: the chunks of a value are never updated, only deleted */
	scan = systable_beginscan(toastrel, RelationGetRelid(toastidxs[valid]),
							  true, SnapshotAny, 1, &key);
	while ((tup = systable_getnext(scan)) != NULL)
		scrub_add_tid(sr, &tup->t_self);
	systable_endscan(scan);
	toast_close_indexes(toastidxs, nidx, AccessShareLock);
	table_close(toastrel, AccessShareLock);
}

/* The out-of-line value of column attnum of the row in slot. */
static void
scrub_note_toast(TupleTableSlot *slot, AttrNumber attnum)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, attnum, &isnull);
	struct varlena *v;
	struct varatt_external ptr;

	if (isnull || TupleDescAttr(slot->tts_tupleDescriptor, attnum - 1)->attlen != -1)
		return;
	v = (struct varlena *) DatumGetPointer(d);
	if (!VARATT_IS_EXTERNAL_ONDISK(v))
		return;
	VARATT_EXTERNAL_GET_POINTER(ptr, v);
	scrub_note_toast_value(ptr.va_toastrelid, ptr.va_valueid);
}

/* Whether the index irel stores column attnum or a value computed from it. */
bool
scrub_index_uses(Relation irel, AttrNumber attnum)
{
	Bitmapset  *attrs = NULL;
	List	   *exprs = RelationGetIndexExpressions(irel);

	for (int i = 0; i < irel->rd_index->indnatts; i++)
		if (irel->rd_index->indkey.values[i] == attnum)
			return true;
	pull_varattnos((Node *) exprs, 1, &attrs);
	return bms_is_member(attnum - FirstLowInvalidHeapAttributeNumber, attrs);
}

/*
 * The key columns of irel over heap column attnum (the column itself, or
 * an expression of it), as a bit mask: bit i for key column i.
 */
uint32
scrub_index_key_columns(Relation irel, AttrNumber attnum)
{
	uint32		mask = 0;
	List	   *exprs = RelationGetIndexExpressions(irel);
	ListCell   *expr = list_head(exprs);

	for (int i = 0; i < IndexRelationGetNumberOfKeyAttributes(irel); i++)
	{
		AttrNumber	key = irel->rd_index->indkey.values[i];

		if (key == attnum)
			mask |= (uint32) 1 << i;
		else if (key == 0 && expr != NULL)
		{
			Bitmapset  *attrs = NULL;

			pull_varattnos(lfirst(expr), 1, &attrs);
			if (bms_is_member(attnum - FirstLowInvalidHeapAttributeNumber, attrs))
				mask |= (uint32) 1 << i;
			expr = lnext(exprs, expr);
		}
	}
	return mask;
}

/* A hash of an index column's value: its bytes, detoasted. */
uint64
scrub_key_hash(Form_pg_attribute att, Datum value)
{
	uint64		hash;

	if (att->attlen == -1)
	{
		struct varlena *v = PG_DETOAST_DATUM_PACKED(value);

		hash = hash_bytes_extended((const unsigned char *) VARDATA_ANY(v),
								   VARSIZE_ANY_EXHDR(v), 0);
		if ((Pointer) v != DatumGetPointer(value))
			pfree(v);
	}
	else if (att->attbyval)
		hash = hash_bytes_extended((const unsigned char *) &value,
								   sizeof(Datum), 0);
	else if (att->attlen == -2)
		hash = hash_bytes_extended((const unsigned char *) DatumGetCString(value),
								   strlen(DatumGetCString(value)), 0);
	else
		hash = hash_bytes_extended((const unsigned char *) DatumGetPointer(value),
								   att->attlen, 0);
	return hash;
}

/*
 * Descend irel with itup (key and heap TID) and note the leaf and its
 * parents.  A btree without the heap TID in its keys (version 2 or 3, from
 * pg_upgrade) is read whole instead.
 */
static void
scrub_btree_descend(Relation irel, Relation heap, IndexTuple itup)
{
	BTScanInsert key = _bt_mkscankey(irel, itup);
	ScrubRel   *sr = scrub_rel(RelationGetRelid(irel), true);
	BTStack		stack;
	Buffer		buf;

	if (!key->heapkeyspace || sr->whole)
	{
		sr->whole = true;
		pfree(key);
		return;
	}
	stack = anonymize_bt_search(irel, heap, key, &buf);
	if (BufferIsValid(buf))
	{
		scrub_add_block(sr, BufferGetBlockNumber(buf));
		_bt_relbuf(irel, buf);
	}
	for (BTStack s = stack; s != NULL; s = s->bts_parent)
		scrub_add_block(sr, s->bts_blkno);
	_bt_freestack(stack);
	pfree(key);
}

/*
 * The btree entry of the row in slot: its leaf and parents, and the hashes
 * of its values of the target column (keymask), which a separator or high
 * key left after the vacuum may repeat.
 */
static void
scrub_note_btree(Relation irel, IndexInfo *ii, uint32 keymask, Relation heap,
				 TupleTableSlot *slot, EState *estate, ItemPointer tid)
{
	Datum		values[INDEX_MAX_KEYS];
	bool		isnull[INDEX_MAX_KEYS];
	IndexTuple	itup;
	ScrubRel   *sr;

	FormIndexDatum(ii, slot, estate, values, isnull);
	itup = index_form_tuple(RelationGetDescr(irel), values, isnull);
	itup->t_tid = *tid;
	scrub_btree_descend(irel, heap, itup);
	pfree(itup);
	sr = scrub_rel(RelationGetRelid(irel), true);
	for (int i = 0; i < INDEX_MAX_KEYS && !sr->whole; i++)
		if ((keymask & ((uint32) 1 << i)) && !isnull[i])
			scrub_add_key(sr, scrub_key_hash(TupleDescAttr(RelationGetDescr(irel), i),
											 values[i]));
}

/* Open the btree indexes of heap, with what FormIndexDatum needs. */
static int
scrub_open_btrees(Relation heap, AttrNumber attnum, Relation **irels,
				  IndexInfo ***iis)
{
	List	   *indexes = RelationGetIndexList(heap);
	ListCell   *lc;
	int			n = 0;

	*irels = palloc(sizeof(Relation) * Max(list_length(indexes), 1));
	*iis = palloc(sizeof(IndexInfo *) * Max(list_length(indexes), 1));
	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);

		if (irel->rd_rel->relam != BTREE_AM_OID ||
			!scrub_index_uses(irel, attnum))
		{
			/* other methods: read after the vacuum; others: no identifier */
			index_close(irel, AccessShareLock);
			continue;
		}
		(*irels)[n] = irel;
		(*iis)[n++] = BuildIndexInfo(irel);
	}
	list_free(indexes);
	return n;
}

/* See anonymize_scrub.h. */
void
anonymize_scrub_note_rows(Oid relid, const char *col, const Datum *tids,
						  int ntids)
{
	Relation	heap;
	Relation   *irels;
	IndexInfo **iis;
	uint32	   *masks;
	int			nidx;
	TupleTableSlot *slot;
	EState	   *estate;
	ExprContext *econtext;
	ScrubRel   *sr;
	instr_time	t0;
	instr_time	t1;

	if (scrub_state == NULL || ntids == 0)
		return;
	INSTR_TIME_SET_CURRENT(t0);
	heap = try_table_open(relid, AccessShareLock);
	if (heap == NULL)
		return;
	if (heap->rd_rel->relam != HEAP_TABLE_AM_OID)
	{
		table_close(heap, AccessShareLock);
		return;
	}
	sr = scrub_rel(relid, true);
	sr->attnum = get_attnum(relid, col);
	nidx = scrub_open_btrees(heap, sr->attnum, &irels, &iis);
	masks = palloc(sizeof(uint32) * Max(nidx, 1));
	for (int j = 0; j < nidx; j++)
		masks[j] = scrub_index_key_columns(irels[j], sr->attnum);
	slot = table_slot_create(heap, NULL);
	estate = CreateExecutorState();
	econtext = GetPerTupleExprContext(estate);
	econtext->ecxt_scantuple = slot;

	for (int i = 0; i < ntids; i++)
	{
		ItemPointer tid = (ItemPointer) DatumGetPointer(tids[i]);

		if (!sr->whole)
			scrub_add_tid(sr, tid);
		if (!table_tuple_fetch_row_version(heap, tid, SnapshotAny, slot))
			continue;
		if (sr->attnum != InvalidAttrNumber)
			scrub_note_toast(slot, sr->attnum);
		for (int j = 0; j < nidx; j++)
			scrub_note_btree(irels[j], iis[j], masks[j], heap, slot, estate,
							 tid);
		ResetExprContext(econtext);
	}

	FreeExecutorState(estate);
	ExecDropSingleTupleTableSlot(slot);
	for (int j = 0; j < nidx; j++)
		index_close(irels[j], AccessShareLock);
	pfree(irels);
	pfree(iis);
	pfree(masks);
	table_close(heap, AccessShareLock);
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	scrub_state->note_ms += INSTR_TIME_GET_MILLISEC(t1);
}
