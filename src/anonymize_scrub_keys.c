/*-------------------------------------------------------------------------
 *
 * anonymize_scrub_keys.c
 *	  After the scrub: which indexes may still hold an erased identifier as
 *	  a live key, which the run then rebuilds (anonymize_run_reindex.c).
 *	  The scrub clears free space only; some index data outlives the rows
 *	  it came from:
 *
 *	  - a btree copies keys into separators of its internal pages and into
 *	    leaf high keys when a page splits, and keeps them when the rows go;
 *	  - a GIN index never removes an entry key, BRIN keeps a range's bounds,
 *	    GiST and SP-GiST keep union keys and prefixes.
 *
 *	  For a btree the run noted, before its rewrite, a hash of each old
 *	  value of the target column and the pages on the way to its entry;
 *	  the separators and high keys of those pages are compared with the
 *	  hashes (a separator for a key lies on the way down to that key).
 *	  Only a btree with a match is rebuilt.  The other methods cannot be
 *	  searched that way: an index over the column of a table whose rows
 *	  the run rewrote is rebuilt.  When the pages are unknown (an earlier
 *	  run was killed), every index over a target column is.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "catalog/pg_am_d.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "anonymize_scrub.h"
#include "anonymize_scrub_int.h"
#include "anonymize_settings.h"

/* qsort and bsearch order of key hashes. */
static int
keys_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

/*
 * The hashes of the values of itup's columns in keymask (NULLs left out),
 * into hashes[INDEX_MAX_KEYS]; how many.
 */
static int
keys_tuple_hashes(Relation irel, IndexTuple itup, uint32 keymask,
				  uint64 *hashes)
{
	TupleDesc	desc = RelationGetDescr(irel);
	int			natts = BTreeTupleGetNAtts(itup, irel);
	int			n = 0;

	for (int i = 0; i < natts && i < INDEX_MAX_KEYS; i++)
	{
		bool		isnull;
		Datum		value;

		if (!(keymask & ((uint32) 1 << i)))
			continue;
		value = index_getattr(itup, i + 1, desc, &isnull);
		if (!isnull)
			hashes[n++] = scrub_key_hash(TupleDescAttr(desc, i), value);
	}
	return n;
}

/* See anonymize_scrub_int.h. */
bool
scrub_keys_tuple_matches(Relation irel, IndexTuple itup, ScrubRel *sr,
						 uint32 keymask)
{
	uint64		hashes[INDEX_MAX_KEYS];
	int			n = keys_tuple_hashes(irel, itup, keymask, hashes);

	for (int i = 0; i < n; i++)
		if (bsearch(&hashes[i], sr->keys, sr->nkeys, sizeof(uint64), keys_cmp))
			return true;
	return false;
}

/* See anonymize_scrub_int.h. */
void
scrub_keys_forget(Relation irel, IndexTuple itup, ScrubRel *sr,
				  uint32 keymask)
{
	uint64		hashes[INDEX_MAX_KEYS];
	int			n = keys_tuple_hashes(irel, itup, keymask, hashes);

	for (int i = 0; i < n; i++)
	{
		uint64	   *hit;

		while ((hit = bsearch(&hashes[i], sr->keys, sr->nkeys,
							  sizeof(uint64), keys_cmp)) != NULL)
		{
			memmove(hit, hit + 1,
					(sr->keys + sr->nkeys - (hit + 1)) * sizeof(uint64));
			sr->nkeys--;
		}
	}
}

/* See anonymize_scrub_int.h. */
bool
scrub_btree_page_live(Page page)
{
	return !PageIsNew(page) &&
		PageGetSpecialSize(page) == MAXALIGN(sizeof(BTPageOpaqueData)) &&
		!P_IGNORE(BTPageGetOpaque(page)) && !P_ISMETA(BTPageGetOpaque(page));
}

/* Whether the high key or a separator of btree page blkno is a noted key. */
static bool
keys_page_holds(Relation irel, BlockNumber blkno, ScrubRel *sr,
				uint32 keymask)
{
	Buffer		buf = ReadBuffer(irel, blkno);
	Page		page;
	BTPageOpaque op;
	bool		hit = false;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (scrub_btree_page_live(page))
	{
		OffsetNumber maxoff = PageGetMaxOffsetNumber(page);

		op = BTPageGetOpaque(page);
		if (!P_RIGHTMOST(op) && maxoff >= P_HIKEY)
			hit = scrub_keys_tuple_matches(irel,
										   (IndexTuple) PageGetItem(page, PageGetItemId(page, P_HIKEY)),
										   sr, keymask);
		/* a leaf's other tuples are entries, which the vacuum handled */
		for (OffsetNumber off = P_FIRSTDATAKEY(op);
			 !hit && !P_ISLEAF(op) && off <= maxoff; off++)
			hit = scrub_keys_tuple_matches(irel,
										   (IndexTuple) PageGetItem(page, PageGetItemId(page, off)),
										   sr, keymask);
	}
	UnlockReleaseBuffer(buf);
	return hit;
}

/* Whether a noted page of btree irel keeps a noted old key live. */
static bool
keys_btree_holds(Relation irel, ScrubRel *sr, uint32 keymask)
{
	BlockNumber nrel = RelationGetNumberOfBlocks(irel);

	if (sr->nkeys == 0 || keymask == 0)
		return false;
	qsort(sr->keys, sr->nkeys, sizeof(uint64), keys_cmp);
	for (int i = 0; i < sr->nblocks; i++)
		if (sr->blocks[i] < nrel &&
			keys_page_holds(irel, sr->blocks[i], sr, keymask))
			return true;
	return false;
}

/*
 * Rewrite in place the separators of btree irel that hold a noted old key
 * (anonymize_scrub_pivot.c), with heap locked against writers; whether one
 * still does (left for the rebuild).
 */
static bool
keys_btree_rewrite(Relation heap, Relation irel, ScrubRel *sr, uint32 keymask)
{
	int			n;
	int			live = 0;
	bool		held;

	if (!scrub_pivot_lock(heap))
	{
		ereport(LOG,
				(errmsg("anonymize run %lld: could not lock table %s.%s against writers to rewrite separators of index %s.%s in place; rebuilding it",
						(long long) scrub_state->run_id,
						get_namespace_name(RelationGetNamespace(heap)),
						RelationGetRelationName(heap),
						get_namespace_name(RelationGetNamespace(irel)),
						RelationGetRelationName(irel))));
		return true;
	}
	n = scrub_pivot_rewrite(irel, sr, keymask, &live);
	held = keys_btree_holds(irel, sr, keymask);
	UnlockRelationOid(RelationGetRelid(heap), ShareLock);
	if (n > 0 || held)
		ereport(LOG,
				(errmsg_plural("anonymize run %lld: rewrote %d separator of index %s.%s in place: it held an erased identifier%s",
							   "anonymize run %lld: rewrote %d separators of index %s.%s in place: they held an erased identifier%s",
							   n, (long long) scrub_state->run_id, n,
							   get_namespace_name(RelationGetNamespace(irel)),
							   RelationGetRelationName(irel),
							   held ? "; another still does, the index is rebuilt" : "")));
	if (live > 0)
		ereport(LOG,
				(errmsg_plural("anonymize run %lld: %d separator of index %s.%s repeats an erased key that rows the run kept still hold: it stays, as their entries do",
							   "anonymize run %lld: %d separators of index %s.%s repeat an erased key that rows the run kept still hold: they stay, as their entries do",
							   live, (long long) scrub_state->run_id, live,
							   get_namespace_name(RelationGetNamespace(irel)),
							   RelationGetRelationName(irel)),
				 errdetail("Rows past a request's to-date, or Held, keep the identifier.")));
	return held;
}

/* The target column of heap (a target leaf), or InvalidAttrNumber. */
static AttrNumber
keys_target_column(Oid relid)
{
	ListCell   *lc;

	foreach(lc, scrub_state->columns)
	{
		ScrubColumn *c = lfirst(lc);

		if (c->relid == relid)
			return c->attnum;
	}
	return InvalidAttrNumber;
}

/* Whether index irel of heap may keep an erased identifier as a live key. */
static bool
keys_index_may_hold(Relation heap, Relation irel, ScrubRel *hsr, bool whole)
{
	Oid			am = irel->rd_rel->relam;
	AttrNumber	attnum = hsr != NULL && hsr->attnum != InvalidAttrNumber
		? hsr->attnum : keys_target_column(RelationGetRelid(heap));
	ScrubRel   *sr;
	uint32		keymask;

	if (am == HASH_AM_OID || attnum == InvalidAttrNumber ||
		!scrub_index_uses(irel, attnum))
		return false;
	if (whole)
		return true;
	if (am != BTREE_AM_OID)
		return hsr != NULL;
	sr = scrub_rel(RelationGetRelid(irel), false);
	if (sr == NULL)
		return false;
	if (sr->whole)
		return true;
	keymask = scrub_index_key_columns(irel, attnum);
	return keys_btree_holds(irel, sr, keymask) &&
		(!anonymize_rebuild_indexes || keys_btree_rewrite(heap, irel, sr, keymask));
}

/* See anonymize_scrub.h. */
void
anonymize_scrub_target_column(Oid relid, AttrNumber attnum)
{
	MemoryContext old;
	ScrubColumn *c;

	if (scrub_state == NULL || attnum == InvalidAttrNumber)
		return;
	old = MemoryContextSwitchTo(scrub_state->cxt);
	c = palloc(sizeof(ScrubColumn));
	c->relid = relid;
	c->attnum = attnum;
	scrub_state->columns = lappend(scrub_state->columns, c);
	MemoryContextSwitchTo(old);
}

/*
 * After the scrub of heap's index irel: note it for a rebuild when it may
 * keep an erased identifier as a live key.
 */
void
scrub_keys_check_index(Relation heap, Relation irel, ScrubRel *hsr,
					   bool whole)
{
	MemoryContext old;

	if (!keys_index_may_hold(heap, irel, hsr, whole))
		return;
	old = MemoryContextSwitchTo(scrub_state->cxt);
	scrub_state->rebuild = list_append_unique_oid(scrub_state->rebuild,
												  RelationGetRelid(irel));
	MemoryContextSwitchTo(old);
}
