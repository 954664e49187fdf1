/*-------------------------------------------------------------------------
 *
 * anonymize_scrub_pivot.c
 *	  Rewrite in place a btree separator that still holds an erased
 *	  identifier, instead of rebuilding the whole index.
 *
 *	  A separator is a copy of a key made when a page split.  It stays
 *	  when the rows go, at several places of the tree: as a downlink's key
 *	  in one internal page (its top occurrence), and as the high key of
 *	  each page down the right edge of the subtree on its left.  Any key
 *	  above the last entry on its left and at most the first entry on its
 *	  right separates the same entries: the run computes the smallest such
 *	  key with nbtree's own suffix truncation (_bt_truncate(), as a page
 *	  split does) from the two leaf entries around it, and writes it over
 *	  every occurrence, byte-identical as nbtree and amcheck expect.
 *
 *	  The table is locked in SHARE mode meanwhile (taken without waiting,
 *	  retried briefly, given up on when writers keep it): no insert, page
 *	  split or vacuum changes the tree while it is read and rewritten, and
 *	  readers stay correct before, during and after, since every version
 *	  of each page separates the same entries.  Each page rewritten has its
 *	  free space zeroed and is WAL-logged as a full image, as the scrub
 *	  does.  What cannot be rewritten so (a separator whose top occurrence
 *	  was not noted, a page without room, a half-deleted page) is left to
 *	  the rebuild, which the caller decides by searching the pages again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/nbtree.h"
#include "access/xloginsert.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "utils/rel.h"
#include "utils/wait_event.h"

#include "anonymize_scrub_int.h"

/* how long the run tries to lock a table for the rewrite, in 10 ms steps */
#define PIVOT_LOCK_TRIES	200

/* the deepest tree the rewrite follows (nbtree's own limit is far above) */
#define PIVOT_MAX_LEVELS	32

/* One separator's occurrences and the leaf entries on either side. */
typedef struct PivotPlan
{
	IndexTuple	sep;			/* the separator */
	BlockNumber top;			/* the internal page of its downlink */
	OffsetNumber off;			/* and the downlink's offset there */
	BlockNumber highkeys[PIVOT_MAX_LEVELS];	/* pages it is the high key of */
	int			nhighkeys;
	IndexTuple	lastleft;		/* last entry left of it */
	IndexTuple	firstright;		/* first entry right of it */
} PivotPlan;

/* Whether a and b are the same pivot key (their downlinks aside). */
static bool
pivot_identical(IndexTuple a, IndexTuple b)
{
	Size		n = IndexTupleSize(a);

	return n == IndexTupleSize(b) &&
		memcmp(&a->t_tid.ip_posid, &b->t_tid.ip_posid,
			   n - offsetof(IndexTupleData, t_tid.ip_posid)) == 0;
}

/* Share-lock blkno of irel; NULL page (and buffer released) unless live. */
static Page
pivot_read(Relation irel, BlockNumber blkno, Buffer *buf)
{
	Page		page;

	*buf = ReadBuffer(irel, blkno);
	LockBuffer(*buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(*buf);
	if (!scrub_btree_page_live(page))
	{
		UnlockReleaseBuffer(*buf);
		return NULL;
	}
	return page;
}

/* A copy of the item at off of page, or NULL when there is none. */
static IndexTuple
pivot_item(Page page, OffsetNumber off)
{
	if (off < FirstOffsetNumber || off > PageGetMaxOffsetNumber(page))
		return NULL;
	return CopyIndexTuple((IndexTuple) PageGetItem(page,
												   PageGetItemId(page, off)));
}

/*
 * Follow the left child of the separator sep down its right edge: each page
 * must have sep as its high key; the leaf's last entry is plan->lastleft.
 */
static bool
pivot_left_edge(Relation irel, BlockNumber blkno, IndexTuple sep,
				PivotPlan *plan)
{
	for (;;)
	{
		Buffer		buf;
		Page		page = pivot_read(irel, blkno, &buf);
		BTPageOpaque op;
		IndexTuple	hikey;
		IndexTuple	last;
		bool		leaf;
		bool		ok;

		if (page == NULL)
			return false;
		op = BTPageGetOpaque(page);
		hikey = P_RIGHTMOST(op) ? NULL : pivot_item(page, P_HIKEY);
		last = PageGetMaxOffsetNumber(page) >= P_FIRSTDATAKEY(op)
			? pivot_item(page, PageGetMaxOffsetNumber(page)) : NULL;
		leaf = P_ISLEAF(op);
		ok = hikey != NULL && last != NULL && pivot_identical(hikey, sep) &&
			plan->nhighkeys < PIVOT_MAX_LEVELS;
		UnlockReleaseBuffer(buf);
		if (!ok)
			return false;
		plan->highkeys[plan->nhighkeys++] = blkno;
		if (leaf)
		{
			plan->lastleft = last;
			return true;
		}
		blkno = BTreeTupleGetDownLink(last);
	}
}

/* Follow the right child down its left edge to its leaf's first entry. */
static bool
pivot_right_edge(Relation irel, BlockNumber blkno, BlockNumber leftleaf,
				 PivotPlan *plan)
{
	for (int level = 0; level < PIVOT_MAX_LEVELS; level++)
	{
		Buffer		buf;
		Page		page = pivot_read(irel, blkno, &buf);
		BTPageOpaque op;
		IndexTuple	first;
		bool		leaf;
		bool		ok;

		if (page == NULL)
			return false;
		op = BTPageGetOpaque(page);
		first = pivot_item(page, P_FIRSTDATAKEY(op));
		leaf = P_ISLEAF(op);
		ok = first != NULL && (!leaf || op->btpo_prev == leftleaf);
		UnlockReleaseBuffer(buf);
		if (!ok)
			return false;
		if (leaf)
		{
			plan->firstright = first;
			return true;
		}
		blkno = BTreeTupleGetDownLink(first);
	}
	return false;
}

/* Plan the rewrite of the separator at off of internal page top. */
static bool
pivot_plan(Relation irel, BlockNumber top, OffsetNumber off, PivotPlan *plan)
{
	Buffer		buf;
	Page		page = pivot_read(irel, top, &buf);
	IndexTuple	sep;
	IndexTuple	left;

	memset(plan, 0, sizeof(*plan));
	plan->top = top;
	plan->off = off;
	if (page == NULL)
		return false;
	sep = pivot_item(page, off);
	left = pivot_item(page, OffsetNumberPrev(off));
	UnlockReleaseBuffer(buf);
	if (sep == NULL || left == NULL)
		return false;
	plan->sep = sep;
	return pivot_left_edge(irel, BTreeTupleGetDownLink(left), sep, plan) &&
		pivot_right_edge(irel, BTreeTupleGetDownLink(sep),
						 plan->highkeys[plan->nhighkeys - 1], plan);
}

/* Whether item off of blkno can be replaced by newkey in place. */
static bool
pivot_room(Relation irel, BlockNumber blkno, OffsetNumber off,
		   IndexTuple newkey)
{
	Buffer		buf;
	Page		page = pivot_read(irel, blkno, &buf);
	PageHeader	ph = (PageHeader) page;
	bool		ok;

	if (page == NULL)
		return false;
	ok = off <= PageGetMaxOffsetNumber(page) &&
		(int) MAXALIGN(IndexTupleSize(newkey)) -
		(int) MAXALIGN(ItemIdGetLength(PageGetItemId(page, off))) <=
		(int) (ph->pd_upper - ph->pd_lower);
	UnlockReleaseBuffer(buf);
	return ok;
}

/*
 * Write newkey (the old item's downlink block kept) over item off of
 * blkno, zero the page's free space and WAL-log its image.
 */
static void
pivot_overwrite(Relation irel, BlockNumber blkno, OffsetNumber off,
				IndexTuple newkey)
{
	Buffer		buf = ReadBuffer(irel, blkno);
	Page		page;
	PageHeader	ph;
	IndexTuple	old;
	IndexTuple	tup = CopyIndexTuple(newkey);
	Size		size = IndexTupleSize(tup);

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	page = BufferGetPage(buf);
	ph = (PageHeader) page;
	old = (IndexTuple) PageGetItem(page, PageGetItemId(page, off));
	BTreeTupleSetDownLink(tup, BTreeTupleGetDownLink(old));
	START_CRIT_SECTION();
	if (!PageIndexTupleOverwrite(page, off, (Item) tup, size))
		elog(PANIC, "could not overwrite a separator of index \"%s\"",
			 RelationGetRelationName(irel));
	memset((char *) page + ph->pd_lower, 0, ph->pd_upper - ph->pd_lower);
	MarkBufferDirty(buf);
	if (RelationNeedsWAL(irel))
		log_newpage_buffer(buf, true);
	END_CRIT_SECTION();
	UnlockReleaseBuffer(buf);
	pfree(tup);
}

/*
 * Carry out plan: every occurrence gets the same new key, or none does
 * (a page without room for it).
 */
static bool
pivot_apply(Relation irel, PivotPlan *plan)
{
	BTScanInsert key = _bt_mkscankey(irel, NULL);
	IndexTuple	newkey = _bt_truncate(irel, plan->lastleft, plan->firstright,
									  key);

	pfree(key);
	if (!pivot_room(irel, plan->top, plan->off, newkey))
		return false;
	for (int i = 0; i < plan->nhighkeys; i++)
		if (!pivot_room(irel, plan->highkeys[i], P_HIKEY, newkey))
			return false;
	pivot_overwrite(irel, plan->top, plan->off, newkey);
	for (int i = 0; i < plan->nhighkeys; i++)
		pivot_overwrite(irel, plan->highkeys[i], P_HIKEY, newkey);
	return true;
}

/*
 * The downlinks of the noted internal pages of irel whose key matches a
 * noted old key: their top occurrences, as (block, offset) pairs.
 */
static List *
pivot_find(Relation irel, ScrubRel *sr, uint32 keymask)
{
	List	   *found = NIL;
	BlockNumber nrel = RelationGetNumberOfBlocks(irel);

	for (int i = 0; i < sr->nblocks; i++)
	{
		Buffer		buf;
		Page		page;
		BTPageOpaque op;

		if (sr->blocks[i] >= nrel ||
			(page = pivot_read(irel, sr->blocks[i], &buf)) == NULL)
			continue;
		op = BTPageGetOpaque(page);
		/* the first downlink's key is minus infinity */
		for (OffsetNumber off = P_FIRSTDATAKEY(op) + 1;
			 !P_ISLEAF(op) && off <= PageGetMaxOffsetNumber(page); off++)
			if (scrub_keys_tuple_matches(irel,
										 (IndexTuple) PageGetItem(page, PageGetItemId(page, off)),
										 sr, keymask))
				found = lappend_int(lappend_int(found, sr->blocks[i]), off);
		UnlockReleaseBuffer(buf);
	}
	return found;
}

/* See anonymize_scrub_int.h. */
bool
scrub_pivot_lock(Relation heap)
{
	for (int i = 0; i < PIVOT_LOCK_TRIES; i++)
	{
		if (ConditionalLockRelationOid(RelationGetRelid(heap), ShareLock))
			return true;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return false;
}

/* See anonymize_scrub_int.h. */
int
scrub_pivot_rewrite(Relation irel, ScrubRel *sr, uint32 keymask, int *live)
{
	List	   *found = pivot_find(irel, sr, keymask);
	int			n = 0;

	for (int i = 0; i + 1 < list_length(found); i += 2)
	{
		PivotPlan	plan;

		if (!pivot_plan(irel, list_nth_int(found, i),
						(OffsetNumber) list_nth_int(found, i + 1), &plan))
			continue;
		/* a key that kept rows still hold stays in their entries anyway */
		scrub_keys_forget(irel, plan.lastleft, sr, keymask);
		scrub_keys_forget(irel, plan.firstright, sr, keymask);
		if (!scrub_keys_tuple_matches(irel, plan.sep, sr, keymask))
			(*live)++;
		else if (pivot_apply(irel, &plan))
			n++;
	}
	list_free(found);
	return n;
}
