/*-------------------------------------------------------------------------
 *
 * anonymize_scrub_int.h
 *	  What the scrub's two files share: the pages a run noted before its
 *	  rewrite (anonymize_scrub_note.c), which the scrub after the vacuum
 *	  visits (anonymize_scrub.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_SCRUB_INT_H
#define ANONYMIZE_SCRUB_INT_H

#include "access/itup.h"
#include "access/xlogdefs.h"
#include "nodes/pg_list.h"
#include "storage/bufpage.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"

/* the noted pages of one relation */
typedef struct ScrubRel
{
	Oid			relid;
	AttrNumber	attnum;			/* heap: the target column */
	ItemPointerData *tids;		/* heap: old versions; TOAST: chunks */
	int			ntids;
	int			maxtids;
	BlockNumber *blocks;		/* btree: leaves and parents found */
	int			nblocks;
	int			maxblocks;
	uint64	   *keys;			/* btree: hashes of the old keys' values
								 * of the target column */
	int			nkeys;
	int			maxkeys;
	bool		whole;			/* read whole, pages changed since the run
								 * began: too many notes, or a btree without
								 * heap TID keys */
} ScrubRel;

/* the noting of the current run */
typedef struct ScrubState
{
	MemoryContext cxt;
	XLogRecPtr	since;			/* insert LSN when the run began */
	List	   *rels;			/* ScrubRel * */
	Size		bytes;			/* of the notes' arrays, at most
								 * SCRUB_NOTE_BUDGET */
	double		note_ms;		/* time spent noting */
	List	   *columns;		/* ScrubColumn *: the target column of each
								 * target leaf */
	List	   *rebuild;		/* indexes that may keep an erased key live */
	int64		run_id;			/* of the scrub, for its log lines */
} ScrubState;

/* a target leaf's identifier column */
typedef struct ScrubColumn
{
	Oid			relid;
	AttrNumber	attnum;
} ScrubColumn;

/*
 * Past this many bytes of notes (about 500,000 rows rewritten), the
 * relation whose notes grow is read whole after the vacuum instead (its
 * pages changed since the run began): the run's memory stays bounded.
 */
#define SCRUB_NOTE_BUDGET	(4 * 1024 * 1024)

extern ScrubState *scrub_state;

extern ScrubRel *scrub_rel(Oid relid, bool create);
extern bool scrub_index_uses(Relation irel, AttrNumber attnum);
extern uint32 scrub_index_key_columns(Relation irel, AttrNumber attnum);
extern uint64 scrub_key_hash(Form_pg_attribute att, Datum value);
extern void scrub_keys_check_index(Relation heap, Relation irel,
								   ScrubRel *hsr, bool whole);
extern void scrub_sort_blocks(ScrubRel *sr);

/* Whether a pivot tuple's columns in keymask hash to a noted old key. */
extern bool scrub_keys_tuple_matches(Relation irel, IndexTuple itup,
									 ScrubRel *sr, uint32 keymask);

/*
 * Forget the noted old keys that index tuple itup (a live entry) holds in
 * its columns in keymask: rows the run did not rewrite still have them, so
 * a separator repeating them is no leak.
 */
extern void scrub_keys_forget(Relation irel, IndexTuple itup, ScrubRel *sr,
							  uint32 keymask);

/* Whether a btree page is in use: not new, deleted, half-dead or the metapage. */
extern bool scrub_btree_page_live(Page page);

/*
 * Lock heap in SHARE mode against writers for the separators' rewrite,
 * without queueing behind them: tried for about two seconds.
 */
extern bool scrub_pivot_lock(Relation heap);

/*
 * Rewrite in place each separator of btree irel (heap locked by
 * scrub_pivot_lock()) whose top occurrence is a noted page's downlink
 * matching a noted old key; how many were rewritten.  *live counts those
 * left because an entry next to them still holds the key (forgotten).
 */
extern int	scrub_pivot_rewrite(Relation irel, ScrubRel *sr, uint32 keymask,
								int *live);

#endif							/* ANONYMIZE_SCRUB_INT_H */
