/*-------------------------------------------------------------------------
 *
 * anonymize_run_private.h
 *	  The state of one erasure run, shared by the files of the run:
 *	  anonymize_run.c (start, requests, scans, Held decision, rewrite
 *	  batches, the run itself), anonymize_run_finish.c (digests, receipts,
 *	  Done) and anonymize_run_vacuum.c (the vacuum that ends a run).
 *
 * Not for use outside the run: anonymize_run.h is its interface.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_RUN_PRIVATE_H
#define ANONYMIZE_RUN_PRIVATE_H

#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "utils/array.h"
#include "utils/palloc.h"

#include "anonymize_engine.h"
#include "anonymize_run.h"

/* a matching row found by a scan, to be rewritten */
typedef struct RunMatch
{
	int32		target;			/* index into RunState.targets */
	int32		req;			/* index into RunState.reqs */
	Oid			leaf;
	ItemPointerData tid;
} RunMatch;

/* everything one run knows, in cxt, which outlives its transactions */
typedef struct RunState
{
	MemoryContext cxt;
	int64		run_id;
	const char *trigger;
	AnonymizeRunResult *result;

	AnonymizeRequest *reqs;
	int			nreqs;
	bool	   *resumed;		/* Running already when this run began */
	bool	   *prior;			/* had 'rewrite' receipts when this run began */

	AnonymizeTarget *targets;	/* every target processed so far */
	int			ntargets;
	int			maxtargets;
	/* what this run's committed batches rewrote, for the receipts */
	int64	   *rewritten;		/* [request]: rows, all targets */
	uint8	  **trows;			/* [target]: bit per request, some rows */
	char	  **tfailed;		/* [target]: why it cannot be rewritten, or NULL */
	bool	   *tchecked;		/* [target]: checked before its first rewrite */

	/* matches of the current pass */
	RunMatch   *matches;
	int64		nmatches;
	int64		maxmatches;
	bool		overflow;
	bool		counting;

	List	   *touched;		/* leaf OIDs rewritten, to vacuum */
	List	   *scanned_leaves; /* leaf OIDs scanned */
	bool		vacuum_owed;	/* an earlier run never finished its vacuum */
	struct RunLedger *ledger;	/* anonymize_ledger.c: Done requests in force */
	List	   *citus_vacuum;	/* Citus targets (OIDs) to vacuum on the shards */
} RunState;

/* anonymize_run.c: helpers of every step */

/* SPI_execute_with_args(), read-write; elog(ERROR) unless it gives expected */
extern void anonymize_run_exec(const char *sql, int nargs, Oid *types,
							   Datum *values, const char *nulls, int expected);

/* "anonymize run N: " and the message, in pg_stat_activity */
extern void anonymize_run_activity(RunState *st, const char *fmt,...) pg_attribute_printf(2, 3);

/* "3, 4, 7" for at most 10 request ids (indexes idx into st->reqs) */
extern char *anonymize_run_request_ids(RunState *st, const int *idx, int n);

/* qsort() and bsearch() comparator of ints */
extern int	anonymize_run_cmp_int(const void *a, const void *b);

/* a bigint[] of v[0..n) */
extern ArrayType *anonymize_run_int8_array(const int64 *v, int n);
extern void anonymize_run_leaf_detail(AnonymizeTarget *target, Oid leaf,
									  Datum *value, char *null);

/* around the run's writes to the page: no row trigger, one invalidation */
extern void anonymize_run_page_write_begin(void);
extern void anonymize_run_page_write_end(void);

/* append the targets not known yet; returns the index of the first new one */
extern int	anonymize_run_new_targets(RunState *st);

/* anonymize_run_target.c: checks, failed targets, materialized views */
extern bool anonymize_run_target_error(int sqlerrcode);
extern bool anonymize_run_target_usable(RunState *st, int t);
extern void anonymize_run_fail_target(RunState *st, int t, const char *reason);
extern char *anonymize_run_target_caught(MemoryContext keep, MemoryContext cxt);
extern void anonymize_run_catch_target(RunState *st, int t, MemoryContext cxt);
extern void anonymize_run_refresh_matviews(RunState *st, int first);

/* anonymize_run.c: one rewrite batch, in its transaction, and its outcome */
typedef enum RunBatchOutcome
{
	RUN_BATCH_WRITTEN,			/* committed with its receipts */
	RUN_BATCH_GONE,				/* its table was dropped meanwhile */
	RUN_BATCH_FAILED			/* a target error: aborted, with the reason */
} RunBatchOutcome;

extern int64 anonymize_run_group_end(RunState *st, int64 start);
extern int *anonymize_run_batch_requests(RunState *st, int64 from, int n,
										 int *nids);
extern RunBatchOutcome anonymize_run_batch(RunState *st, int64 from, int n,
										   int64 done, int64 total,
										   const int *ids, int nids,
										   int64 *rcount, bool note,
										   int64 *rewritten, char **reason);
extern void anonymize_run_rewrite_batch(RunState *st, int64 from, int64 to,
										int64 done, int64 total, bool note);
extern void anonymize_run_batch_outcome(RunState *st, int64 from,
										const int *ids, int nids,
										const int64 *rcount, int64 rewritten,
										const char *reason);

/*
 * anonymize_run_parallel_rewrite.c: the rewrite shared with the run's
 * workers; false when it is not (anonymize.parallel_rewrite_min_rows -1 or
 * above the matches, too few batches, parallel runs off, no worker
 * started): the caller rewrites serially then
 */
extern bool anonymize_run_parallel_rewrite(RunState *st);

/* anonymize_run_rewrite.c: what a target's rows get (NULL: erased to NULL) */
extern char *anonymize_run_replacement(AnonymizeTarget *target);

/* anonymize_run_rewrite.c: one batch's rows, noted for the scrub, rewritten */
extern void anonymize_run_note_rows(RunState *st, AnonymizeTarget *target,
									Oid leaf, int64 from, int n);
extern int64 anonymize_run_rewrite_rows(RunState *st, AnonymizeTarget *target,
										Oid leaf, int64 from, int n,
										const int *ids, int nids,
										int64 *rcount);

/*
 * anonymize_run_reindex.c: tell the scrub each target leaf's column; after
 * the scrub, rebuild the indexes that may keep an erased identifier as a
 * live key (false when one could not be rebuilt)
 */
extern void anonymize_run_reindex_columns(void);
extern bool anonymize_run_reindex(RunState *st, List *indexes);

/* anonymize_run_finish.c: false when targets were added meanwhile */
extern bool anonymize_run_finish(RunState *st);

/* anonymize_citus_run.c: Citus targets, on their shards */
extern bool anonymize_citus_run_scan(RunState *st, int t, bool in_ledger);
extern void anonymize_citus_run_rewrite(RunState *st, int first);
extern void anonymize_citus_run_fail_count(RunState *st,
										   AnonymizeTarget *target, bool *hit);
extern bool anonymize_citus_run_vacuum(RunState *st);

/* anonymize_run_vacuum.c: vacuum what the run touched, and the page */
extern void anonymize_run_vacuum(RunState *st);

#endif							/* ANONYMIZE_RUN_PRIVATE_H */
