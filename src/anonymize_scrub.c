/*-------------------------------------------------------------------------
 *
 * anonymize_scrub.c
 *	  The page scrub, after the run's vacuum.  Vacuum removes the old
 *	  versions of rewritten rows and their index entries, but compacting a
 *	  page (PageRepairFragmentation, PageIndexMultiDelete, a btree page
 *	  deletion) only moves pd_upper: the bytes stay in the hole between
 *	  pd_lower and pd_upper.  The scrub zeroes that hole, under the
 *	  buffer's exclusive lock in a critical section, and WAL-logs the page
 *	  with log_newpage_buffer(page_std): the image leaves the hole out and
 *	  its replay restores it as zeros, so crash recovery and every standby
 *	  end with the same bytes as the primary.  A page whose hole is zero
 *	  already is left alone and writes no WAL.
 *
 *	  Which pages: those noted before the rewrite (anonymize_scrub_note.c:
 *	  heap pages of the old versions, their TOAST chunks, btree leaves and
 *	  parents, descended again after the vacuum); for GiST, SP-GiST, GIN
 *	  and BRIN, which cannot be searched for the page of a key, every page
 *	  the run changed (LSN at or past its start); for the anonymize
 *	  schema's tables, or every target when an earlier run's pages are
 *	  unknown (it was killed), every page.  Hash indexes hold 32-bit hash
 *	  codes, never a value, and are skipped; so are metapages and BRIN
 *	  revmap pages, which hold no value and keep no hole.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/brin_page.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xloginsert.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "executor/instrument.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#include "storage/bufmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "anonymize_compat.h"
#include "anonymize_scrub.h"
#include "anonymize_scrub_int.h"
#include "anonymize_throttle.h"

static const char scrub_zeros[BLCKSZ];

/* how far right of a noted btree leaf changed siblings are followed */
#define SCRUB_RIGHT_STEPS	4

/* Whether blkno of rel is a page of a layout whose hole may be zeroed. */
static bool
scrub_page_kind_ok(Relation rel, Page page, BlockNumber blkno)
{
	Oid			am = rel->rd_rel->relam;

	if (rel->rd_rel->relkind != RELKIND_INDEX)
		return am == HEAP_TABLE_AM_OID;
	/* metapages hold no value, and an old one may not keep pd_lower */
	if (blkno == 0 && am != GIST_AM_OID)
		return false;
	if (am == BRIN_AM_OID)
		return BRIN_IS_REGULAR_PAGE(page);
	return am == BTREE_AM_OID || am == GIST_AM_OID || am == GIN_AM_OID ||
		am == SPGIST_AM_OID;
}

/* Whether the page (locked) has a hole with a non-zero byte to clear. */
static bool
scrub_page_dirty(Relation rel, Page page, BlockNumber blkno, XLogRecPtr since)
{
	PageHeader	ph = (PageHeader) page;

	if (PageIsNew(page) || !scrub_page_kind_ok(rel, page, blkno))
		return false;
	if (!XLogRecPtrIsInvalid(since) && PageGetLSN(page) < since)
		return false;
	if (ph->pd_lower < SizeOfPageHeaderData || ph->pd_lower >= ph->pd_upper ||
		ph->pd_upper > ph->pd_special || ph->pd_special > BLCKSZ)
		return false;
	return memcmp((char *) page + ph->pd_lower, scrub_zeros,
				  ph->pd_upper - ph->pd_lower) != 0;
}

/* Zero the hole of the page (exclusively locked) and WAL-log it. */
static void
scrub_page_zero(Relation rel, Buffer buf)
{
	Page		page = BufferGetPage(buf);
	PageHeader	ph = (PageHeader) page;

	START_CRIT_SECTION();
	memset((char *) page + ph->pd_lower, 0, ph->pd_upper - ph->pd_lower);
	MarkBufferDirty(buf);
	/* page_std: the image leaves the hole out, replay writes zeros */
	if (RelationNeedsWAL(rel))
		log_newpage_buffer(buf, true);
	END_CRIT_SECTION();
}

/*
 * Old versions among tids[0..n) (all on this locked heap page) that are
 * still there: updated, and not removed by the vacuum.
 */
static int64
scrub_heap_kept(Page page, const ItemPointerData *tids, int n)
{
	int64		kept = 0;

	for (int i = 0; i < n; i++)
	{
		OffsetNumber off = ItemPointerGetOffsetNumber(&tids[i]);
		ItemId		lp;
		HeapTupleHeader htup;

		if (off > PageGetMaxOffsetNumber(page))
			continue;
		lp = PageGetItemId(page, off);
		if (!ItemIdIsNormal(lp))
			continue;
		htup = (HeapTupleHeader) PageGetItem(page, lp);
		/* a new row in the freed slot has no updater */
		if (!(htup->t_infomask & HEAP_XMAX_INVALID) &&
			!HEAP_XMAX_IS_LOCKED_ONLY(htup->t_infomask))
			kept++;
	}
	return kept;
}

/*
 * Scrub one block: look under a share lock, zero under an exclusive one.
 * For a heap page, tids[0..ntids) are the old versions noted on it.
 * Returns whether the page changed since the run began.
 */
static bool
scrub_block(Relation rel, BlockNumber blkno, XLogRecPtr since,
			BufferAccessStrategy bas, const ItemPointerData *tids, int ntids,
			AnonymizeScrubStats *stats)
{
	Buffer		buf;
	bool		dirty;
	bool		changed;

	CHECK_FOR_INTERRUPTS();
	anonymize_throttle_point();
	buf = ReadBufferExtended(rel, MAIN_FORKNUM, blkno, RBM_NORMAL, bas);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	stats->pages_read++;
	/* outside a run (anonymize._citus_scrub() on a shard): no noted state */
	changed = scrub_state != NULL &&
		PageGetLSN(BufferGetPage(buf)) >= scrub_state->since;
	if (ntids > 0)
		stats->kept += scrub_heap_kept(BufferGetPage(buf), tids, ntids);
	dirty = scrub_page_dirty(rel, BufferGetPage(buf), blkno, since);
	LockBuffer(buf, BUFFER_LOCK_UNLOCK);
	if (dirty)
	{
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		if (scrub_page_dirty(rel, BufferGetPage(buf), blkno, since))
		{
			scrub_page_zero(rel, buf);
			stats->pages_scrubbed++;
		}
		LockBuffer(buf, BUFFER_LOCK_UNLOCK);
	}
	ReleaseBuffer(buf);
	return changed;
}

/* One relation done: what it cost, at DEBUG1 (names and counts only). */
static void
scrub_report(Relation rel, const char *how, int64 read0, int64 scrubbed0,
			 const AnonymizeScrubStats *stats)
{
	elog(DEBUG1, "anonymize scrub: %s (%s): %lld pages read, %lld scrubbed",
		 RelationGetRelationName(rel), how,
		 (long long) (stats->pages_read - read0),
		 (long long) (stats->pages_scrubbed - scrubbed0));
}

/* See anonymize_scrub.h. */
void
anonymize_scrub_relation_blocks(Relation rel, const BlockNumber *blocks,
								int nblocks, XLogRecPtr since,
								AnonymizeScrubStats *stats)
{
	BlockNumber nrel = RelationGetNumberOfBlocks(rel);
	int64		read0 = stats->pages_read;
	int64		scrubbed0 = stats->pages_scrubbed;

	stats->relations++;
	if (blocks == NULL)
	{
		BufferAccessStrategy bas = GetAccessStrategy(BAS_VACUUM);

		for (BlockNumber b = 0; b < nrel; b++)
			(void) scrub_block(rel, b, since, bas, NULL, 0, stats);
		FreeAccessStrategy(bas);
	}
	for (int i = 0; blocks != NULL && i < nblocks; i++)
	{
		/* sorted, unique; past the end: truncated by the vacuum */
		if (i > 0 && blocks[i] == blocks[i - 1])
			continue;
		if (blocks[i] < nrel)
			(void) scrub_block(rel, blocks[i], since, NULL, NULL, 0, stats);
	}
	scrub_report(rel, blocks ? "pages found by key"
				 : XLogRecPtrIsInvalid(since) ? "every page"
				 : "every page the run changed", read0, scrubbed0, stats);
}

/* qsort order of TIDs: by block, then offset. */
static int
scrub_cmp_tid(const void *a, const void *b)
{
	return ItemPointerCompare((ItemPointer) a, (ItemPointer) b);
}

/* The heap (or TOAST) pages of the noted TIDs, counting versions kept. */
static void
scrub_heap_noted(Relation rel, ScrubRel *sr, AnonymizeScrubStats *stats)
{
	BlockNumber nrel = RelationGetNumberOfBlocks(rel);
	int			i = 0;
	int64		read0 = stats->pages_read;
	int64		scrubbed0 = stats->pages_scrubbed;

	stats->relations++;
	qsort(sr->tids, sr->ntids, sizeof(ItemPointerData), scrub_cmp_tid);
	while (i < sr->ntids)
	{
		BlockNumber blkno = ItemPointerGetBlockNumber(&sr->tids[i]);
		int			j = i;

		while (j < sr->ntids && ItemPointerGetBlockNumber(&sr->tids[j]) == blkno)
			j++;
		if (blkno < nrel)
			(void) scrub_block(rel, blkno, InvalidXLogRecPtr, NULL, &sr->tids[i],
							   j - i, stats);
		i = j;
	}
	scrub_report(rel, "pages of the old versions", read0, scrubbed0, stats);
}

/* The right sibling of a btree leaf, InvalidBlockNumber for another page. */
static BlockNumber
scrub_btree_next(Relation irel, BlockNumber blkno)
{
	Buffer		buf = ReadBuffer(irel, blkno);
	Page		page;
	BTPageOpaque op;
	BlockNumber next = InvalidBlockNumber;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (!PageIsNew(page) && PageGetSpecialSize(page) == MAXALIGN(sizeof(BTPageOpaqueData)))
	{
		op = BTPageGetOpaque(page);
		if (P_ISLEAF(op) && !P_RIGHTMOST(op))
			next = op->btpo_next;
	}
	UnlockReleaseBuffer(buf);
	return next;
}

/*
 * A btree's noted leaves and parents; right of a leaf, the siblings that
 * changed since the run began, which a split after the noting may have
 * given some of its entries (a few at most).
 */
static void
scrub_btree_noted(Relation irel, ScrubRel *sr, AnonymizeScrubStats *stats)
{
	BlockNumber nrel = RelationGetNumberOfBlocks(irel);
	int64		read0 = stats->pages_read;
	int64		scrubbed0 = stats->pages_scrubbed;

	if (sr->whole)
	{
		anonymize_scrub_relation_blocks(irel, NULL, 0, scrub_state->since, stats);
		return;
	}
	stats->relations++;
	scrub_sort_blocks(sr);
	for (int i = 0; i < sr->nblocks; i++)
	{
		BlockNumber blkno = sr->blocks[i];

		if (blkno >= nrel)
			continue;			/* truncated */
		(void) scrub_block(irel, blkno, InvalidXLogRecPtr, NULL, NULL, 0, stats);
		for (int step = 0; step < SCRUB_RIGHT_STEPS; step++)
		{
			blkno = scrub_btree_next(irel, blkno);
			if (!BlockNumberIsValid(blkno) || blkno >= nrel ||
				!scrub_block(irel, blkno, scrub_state->since, NULL, NULL, 0,
							 stats))
				break;
		}
	}
	scrub_report(irel, "pages found by key", read0, scrubbed0, stats);
}

/*
 * The indexes of heap: every page (whole), or those of the indexes that
 * store the target column hsr->attnum: noted btree pages, or the pages of
 * other methods that changed since the run began.
 */
static void
scrub_indexes(Relation heap, ScrubRel *hsr, bool whole,
			  AnonymizeScrubStats *stats)
{
	List	   *indexes = RelationGetIndexList(heap);
	ListCell   *lc;

	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);
		Oid			am = irel->rd_rel->relam;
		ScrubRel   *sr = scrub_rel(RelationGetRelid(irel), false);

		if (am == HASH_AM_OID)
			;					/* hash codes only, never a value */
		else if (!whole && !scrub_index_uses(irel, hsr->attnum))
			;					/* no value of the target column */
		else if (whole)
			anonymize_scrub_relation_blocks(irel, NULL, 0, InvalidXLogRecPtr,
											stats);
		else if (am == BTREE_AM_OID)
		{
			if (sr != NULL)
				scrub_btree_noted(irel, sr, stats);
		}
		else
			anonymize_scrub_relation_blocks(irel, NULL, 0, scrub_state->since,
											stats);
		scrub_keys_check_index(heap, irel, hsr, whole);
		index_close(irel, AccessShareLock);
	}
	list_free(indexes);
}

/* One table: its heap, TOAST table and indexes, in a transaction. */
static void
scrub_table(Oid relid, bool whole, AnonymizeScrubStats *stats)
{
	Relation	rel;
	ScrubRel   *sr;

	StartTransactionCommand();
	rel = try_table_open(relid, AccessShareLock);
	if (rel == NULL || rel->rd_rel->relam != HEAP_TABLE_AM_OID)
	{
		if (rel != NULL)
			table_close(rel, AccessShareLock);
		CommitTransactionCommand();
		return;
	}
	if (!whole)
		whole = get_rel_namespace(relid) ==
			get_namespace_oid("anonymize", false);
	sr = scrub_rel(relid, false);
	if (whole || sr != NULL)
	{
		Oid			toastid = rel->rd_rel->reltoastrelid;
		ScrubRel   *tsr = OidIsValid(toastid) ? scrub_rel(toastid, false) : NULL;

		if (whole)
			anonymize_scrub_relation_blocks(rel, NULL, 0, InvalidXLogRecPtr, stats);
		else if (sr->whole)
			anonymize_scrub_relation_blocks(rel, NULL, 0, scrub_state->since, stats);
		else
			scrub_heap_noted(rel, sr, stats);
		if (OidIsValid(toastid) && (whole || tsr != NULL))
		{
			Relation	toast = table_open(toastid, AccessShareLock);

			if (whole || tsr->whole)
				anonymize_scrub_relation_blocks(toast, NULL, 0,
												whole ? InvalidXLogRecPtr
												: scrub_state->since, stats);
			else
				scrub_heap_noted(toast, tsr, stats);
			table_close(toast, AccessShareLock);
		}
		scrub_indexes(rel, sr, whole, stats);
	}
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
}

/* See anonymize_scrub.h. */
bool
anonymize_scrub_run(List *relids, bool whole, int64 run_id,
					AnonymizeScrubStats *stats)
{
	ListCell   *lc;
	WalUsage	wal0 = pgWalUsage;
	instr_time	t0;
	instr_time	t1;
	char		activity[128];

	memset(stats, 0, sizeof(*stats));
	if (scrub_state == NULL)
		return true;
	INSTR_TIME_SET_CURRENT(t0);
	scrub_state->run_id = run_id;
	/* the run's throttle, as for its scan, rewrite and vacuum */
	anonymize_throttle_begin();
	snprintf(activity, sizeof(activity),
			 "anonymize run %lld: scrubbing the pages of %d tables",
			 (long long) run_id, list_length(relids));
	pgstat_report_activity(STATE_RUNNING, activity);
	foreach(lc, relids)
		scrub_table(lfirst_oid(lc), whole, stats);

	anonymize_throttle_end();
	INSTR_TIME_SET_CURRENT(t1);
	INSTR_TIME_SUBTRACT(t1, t0);
	stats->ms = INSTR_TIME_GET_MILLISEC(t1);
	stats->wal_bytes = pgWalUsage.wal_bytes - wal0.wal_bytes;
	stats->wal_fpi = pgWalUsage.wal_fpi - wal0.wal_fpi;
	stats->note_ms = scrub_state->note_ms;
	stats->rebuild = scrub_state->rebuild;
	ereport(LOG,
			(errmsg("anonymize run %lld: scrubbed %lld of %lld pages read in %lld relations (%.1f ms, %lld WAL bytes, %lld full-page images); noting the pages took %.1f ms",
					(long long) run_id, (long long) stats->pages_scrubbed,
					(long long) stats->pages_read, (long long) stats->relations,
					stats->ms, (long long) stats->wal_bytes,
					(long long) stats->wal_fpi, stats->note_ms)));
	if (stats->kept > 0)
		ereport(LOG,
				(errmsg("anonymize run %lld: %lld old row versions are still in their pages: a transaction older than the run can still see them",
						(long long) run_id, (long long) stats->kept),
				 errhint("The next run vacuums and scrubs every target again once that transaction has ended.")));
	scrub_state = NULL;
	return stats->kept == 0;
}
