/*-------------------------------------------------------------------------
 *
 * anonymize_run_parallel.h
 *	  The run's parallel scan and rewrite: the run (the leader) and up to
 *	  anonymize.max_parallel_workers - 1 background workers of its own
 *	  scan either the blocks of one large table together (a parallel heap
 *	  scan under the leader's snapshot), or several tables of a target
 *	  (partitions, inheritance children), each process taking the next
 *	  whole table, largest first, under the leader's snapshot.  Each worker
 *	  rebuilds the match set from the requests in shared memory and sends
 *	  its matching rows to the leader over a message queue; the leader
 *	  reports them to the run's callback, as its own.  Then they rewrite
 *	  the matches, each process taking the next batch, each batch one
 *	  transaction with its receipts; the workers send what each batch
 *	  rewrote to the leader, which keeps it as its own.
 *
 * anonymize_run_parallel.c is the leader's side of both and what they
 * share, anonymize_run_parallel_worker.c the scan workers',
 * anonymize_run_parallel_rewrite.c both sides of the rewrite.  The layout
 * of the shared memory is here, for all.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_RUN_PARALLEL_H
#define ANONYMIZE_RUN_PARALLEL_H

#include "access/relscan.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/shm_mq.h"
#include "utils/relcache.h"

#include "anonymize_engine.h"

/* the bytes of each worker's queue of matches */
#define PARALLEL_QUEUE_SIZE		(64 * 1024)

/* the first byte of the last message of a worker that scanned to the end */
#define PARALLEL_MSG_DONE		'D'

/*
 * The shared memory of one parallel scan: this header, then the requests
 * (nreqs AnonymizeRequest, email pointers cleared), their emails (an
 * offset into the email text, or -1, per request), the email text, the
 * match set and its ledger set (flattened by the engine and the ledger),
 * the parallel scan descriptor of one table (or, for whole tables, their
 * OIDs and the leader's snapshot, serialized) and one queue per worker,
 * each at its offset.
 */
typedef struct ParallelShared
{
	Oid			database;
	Oid			userid;
	Oid			leaf;
	int			leader_pid;		/* the lock group's leader */
	int			participants;	/* the leader and the workers launched */
	int			nworkers;		/* queues */
	int64		run_id;

	/* the target, as the engine needs it */
	char		col[NAMEDATALEN];
	char		time_col[NAMEDATALEN];
	int			kind;
	int			scope;
	Oid			time_type;
	Oid			col_type;

	/* the settings the canonical forms depend on */
	char		country_code[64];
	char		trunk_prefix[64];

	int			nreqs;
	Size		reqs_off;
	Size		email_off;		/* int32 per request */
	Size		text_off;
	Size		ms_off;			/* the match set, flattened */
	Size		ledger_off;		/* its ledger set, flattened, or 0 */
	Size		pscan_off;		/* one table's blocks: its scan descriptor */
	int			nleaves;		/* whole tables: how many, 0 otherwise */
	Size		leaves_off;		/* their OIDs, largest first */
	Size		snap_off;		/* the leader's snapshot */
	pg_atomic_uint32 next_leaf; /* the next table a process takes */

	/* a rewrite (anonymize_run_parallel_rewrite.c): its batches, or 0 */
	int			nbatches;
	Size		batches_off;	/* where each batch's matches are */
	int64		nmatches;
	Size		matches_off;	/* the run's matches, sorted */
	int			ntargets;
	Size		targets_off;	/* the run's targets, flattened */
	Size		tfailed_off;	/* pg_atomic_uint32 per target: failed */
	pg_atomic_uint32 next_batch;	/* the next batch a process takes */
	pg_atomic_uint32 noted;		/* batches noted by the leader for the scrub */

	Size		queue_off;
} ParallelShared;

/*
 * A match sent by a worker: the row (its table and TID) and the requests
 * it matches (as the engine reports them, lowest id first), then, when
 * one of them is a late request of the ledger, the row's canonical key
 * (keylen bytes), from which the leader's late request learns its form.
 */
typedef struct ParallelMatchMsg
{
	Oid			leaf;
	ItemPointerData tid;
	int32		nreqs;
	int32		keylen;
	int32		reqs[FLEXIBLE_ARRAY_MEMBER];
} ParallelMatchMsg;

/* the leader's state of the workers of one scan or rewrite */
typedef struct ParallelLeader ParallelLeader;

/* one message (not the end) of worker i, to the leader */
typedef void (*anonymize_parallel_message_fn) (ParallelLeader *pl, int i,
											   Size len, void *data);

struct ParallelLeader
{
	dsm_segment *seg;
	ParallelShared *sh;
	const char *what;			/* "scan" or "rewrite", in names and errors */
	int			nworkers;		/* queues in the segment */
	BackgroundWorkerHandle **handles;	/* NULL: not started */
	shm_mq_handle **queues;
	bool	   *finished;		/* sent the end of its work */
	int			nlive;			/* started and not finished */
	anonymize_parallel_message_fn message;
	void	   *state;			/* the message function's */

	/* a scan's */
	AnonymizeMatchSet *ms;
	anonymize_match_callback callback;
	void	   *arg;
};

/*
 * What the scan and the rewrite share: the requests' part of the layout
 * (from offset off; returns where it ends) and their copy; the header;
 * the segment of size bytes (with layout's offsets) and its queues, or
 * NULL when no segment is free; the workers' start, what they sent so
 * far, and their end with the segment's.
 */
extern Size anonymize_parallel_layout_requests(ParallelShared *sh, Size off,
											   AnonymizeRequest *reqs,
											   int nreqs);
extern void anonymize_parallel_copy_requests(ParallelShared *sh,
											 AnonymizeRequest *reqs,
											 int nreqs);
extern void anonymize_parallel_fill_header(ParallelShared *sh, int64 run_id,
										   AnonymizeTarget *target, Oid leaf,
										   int nworkers);
extern ParallelLeader *anonymize_parallel_create(ParallelShared *layout,
												 Size size, int nworkers,
												 const char *what);
extern int	anonymize_parallel_start(ParallelLeader *pl,
									 anonymize_parallel_message_fn message,
									 void *state);
extern bool anonymize_parallel_drain(ParallelLeader *pl);
extern void anonymize_parallel_finish(ParallelLeader *pl);
extern void anonymize_parallel_log_serial(int64 run_id, bool segment,
										  const char *step);

/* How many workers the run may start besides itself. */
extern int	anonymize_parallel_workers_max(void);

/* a worker's message to the leader; the worker exits when the leader has gone */
extern void anonymize_parallel_worker_send(shm_mq_handle *mqh, Size len,
										   const void *data, bool flush);

/* the requests of the shared memory, in a worker's memory */
extern AnonymizeRequest *anonymize_parallel_worker_requests(ParallelShared *sh);

/* a rewrite worker's part, after its start (anonymize_run_parallel_rewrite.c) */
extern void anonymize_run_parallel_rewrite_worker(ParallelShared *sh,
												  shm_mq_handle *mqh);

/*
 * Scan leaf (open, in the current transaction, with its snapshot active)
 * with the run's workers, reporting each matching row to callback as
 * anonymize_engine_scan() would.  False when it scanned nothing: the
 * table is small, parallel runs are off, or no worker could be started;
 * the caller scans serially then.
 * An error of any worker is the scan's error.
 */
extern bool anonymize_run_parallel_scan(int64 run_id, AnonymizeMatchSet *ms,
										AnonymizeRequest *reqs, int nreqs,
										AnonymizeTarget *target, Relation leaf,
										anonymize_match_callback callback,
										void *arg);

/*
 * Scan the tables leaves[0..nleaves) of target (each open in the current
 * transaction, with its snapshot active; none looked up in an index) with
 * the run's workers, each process taking the next whole table, largest
 * first, and report each matching row to callback as
 * anonymize_engine_scan() would.  False when it scanned nothing (parallel
 * runs are off, or no worker could be started): the caller scans them
 * itself then.  An error of any worker is the scan's error.
 */
extern bool anonymize_run_parallel_leaves(int64 run_id, AnonymizeMatchSet *ms,
										  AnonymizeRequest *reqs, int nreqs,
										  AnonymizeTarget *target,
										  Relation *leaves, int nleaves,
										  anonymize_match_callback callback,
										  void *arg);

/* the OIDs of the whole tables, in the shared memory sh */
static inline Oid *
anonymize_parallel_leaves(ParallelShared *sh)
{
	return (Oid *) ((char *) sh + sh->leaves_off);
}

/* the queue of worker i, in the shared memory sh */
static inline shm_mq *
anonymize_parallel_queue(ParallelShared *sh, int i)
{
	return (shm_mq *) ((char *) sh + sh->queue_off + (Size) i * PARALLEL_QUEUE_SIZE);
}

/* the entry point of a worker (bgw_main_arg: the segment's handle) */
extern PGDLLEXPORT void anonymize_run_parallel_main(Datum main_arg);

#endif							/* ANONYMIZE_RUN_PARALLEL_H */
