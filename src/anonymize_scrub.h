/*-------------------------------------------------------------------------
 *
 * anonymize_scrub.h
 *	  The page scrub: after the run's vacuum, the free space of every page
 *	  that held a rewritten row's old version (heap, TOAST, btree leaves
 *	  and their parents), and of the anonymize schema's page table, is
 *	  zeroed and WAL-logged, so that no byte of an identifier stays in a
 *	  page on the primary, after crash recovery, or on a standby.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_SCRUB_H
#define ANONYMIZE_SCRUB_H

#include "access/xlogdefs.h"
#include "nodes/pg_list.h"
#include "storage/block.h"
#include "utils/relcache.h"

/* what a scrub did, for the log line and the benchmark */
typedef struct AnonymizeScrubStats
{
	int64		relations;		/* relations (tables, TOAST, indexes) visited */
	int64		pages_read;		/* pages examined */
	int64		pages_scrubbed; /* pages whose free space was zeroed */
	int64		kept;			/* old row versions the vacuum could not remove */
	int64		wal_bytes;
	int64		wal_fpi;
	double		ms;
	double		note_ms;		/* noting the pages, before the rewrites */
	List	   *rebuild;		/* indexes that may keep an erased identifier
								 * as a live key (in the run's context) */
} AnonymizeScrubStats;

/*
 * Start noting for a run: the noted pages live in cxt (the run's context)
 * and pages last changed before now are left alone where only the run's
 * own changes matter.
 */
extern void anonymize_scrub_begin(MemoryContext cxt);

/* Is a run noting pages for the scrub in this process? */
extern bool anonymize_scrub_noting(void);

/*
 * Note the pages that hold the current versions of the rows at tids (an
 * array of Datums pointing to ItemPointerData) of relid, whose column col
 * the caller is about to rewrite in its transaction: their heap pages, the
 * TOAST chunks of their out-of-line col value and, for each btree index on
 * col (or an expression of it), the leaf page and the parents of their
 * entries.
 */
extern void anonymize_scrub_note_rows(Oid relid, const char *col,
									  const Datum *tids, int ntids);

/*
 * Tell the scrub that column attnum of relid (a target leaf) holds
 * identifiers: after a killed run, its indexes over it are rebuilt.
 */
extern void anonymize_scrub_target_column(Oid relid, AttrNumber attnum);

/*
 * After the vacuum of relids, outside a transaction: scrub what was noted
 * and, for relids in the anonymize schema or all of them when whole (an
 * earlier run's pages are unknown), every page of the table, its TOAST
 * table and its indexes.  Logs one line with the counts and returns false
 * when some old row version was still there (a snapshot older than the
 * run): the caller must not record the vacuum as done.  stats->rebuild
 * lists the indexes that may still hold an erased identifier as a live key
 * (a btree separator, a GIN entry): the caller rebuilds them.
 */
extern bool anonymize_scrub_run(List *relids, bool whole, int64 run_id,
								AnonymizeScrubStats *stats);

/*
 * Zero the free space of the given blocks of rel (every block when blocks
 * is NULL) whose LSN is at or past since (every one when since is
 * InvalidXLogRecPtr), WAL-logging each page changed; pages of a layout
 * without a reliable free-space hole (metapages, BRIN revmap) are skipped.
 * Call in a transaction, rel locked.
 */
extern void anonymize_scrub_relation_blocks(Relation rel,
											const BlockNumber *blocks,
											int nblocks, XLogRecPtr since,
											AnonymizeScrubStats *stats);

#endif							/* ANONYMIZE_SCRUB_H */
