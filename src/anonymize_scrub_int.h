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
	List	   *keys;			/* btree: IndexTuples (key, heap TID) */
	bool		whole;			/* btree without heap TID keys: read whole */
} ScrubRel;

/* the noting of the current run */
typedef struct ScrubState
{
	MemoryContext cxt;
	XLogRecPtr	since;			/* insert LSN when the run began */
	List	   *rels;			/* ScrubRel * */
} ScrubState;

extern ScrubState *scrub_state;

extern ScrubRel *scrub_rel(Oid relid, bool create);
extern void scrub_add_block(ScrubRel *sr, BlockNumber blkno);
extern bool scrub_index_uses(Relation irel, AttrNumber attnum);
extern bool scrub_btree_descend(Relation irel, Relation heap, IndexTuple itup);

#endif							/* ANONYMIZE_SCRUB_INT_H */
