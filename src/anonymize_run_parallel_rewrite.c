/*-------------------------------------------------------------------------
 *
 * anonymize_run_parallel_rewrite.c
 *	  The run's rewrite shared with its workers (see
 *	  anonymize_run_parallel.h).  The matches, sorted, are cut into
 *	  batches of one target and one table, at most anonymize.batch_size
 *	  rows each and fewer where that gives each process a share of a
 *	  table's rows.  The run (the leader) notes each batch's pages for the
 *	  scrub, in order, while the workers take the batches noted; then it
 *	  takes batches too.  A batch is one transaction with its receipts, as
 *	  in the serial run (anonymize_run_batch()); a worker sends the leader
 *	  the rows each batch rewrote per request, or why the batch failed its
 *	  target, and the leader keeps that as its own batch's outcome
 *	  (anonymize_run_batch_outcome()).
 *
 * A batch commits or aborts whole, with its receipts, whoever rewrites
 * it: a crash, or a worker that stops, leaves nothing a receipt does not
 * count, and fails the run as an error after a serial batch would; the
 * next run scans again.  A target failed by a batch has its later batches
 * left, as the serial run leaves them; a batch of it already under way in
 * another process goes on.  The workers send no identifier, only counts
 * and the target error's message, which the serial run logs too.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/wait_event.h"

#include "anonymize_run_parallel.h"
#include "anonymize_run_private.h"
#include "anonymize_scrub.h"
#include "anonymize_settings.h"
#include "anonymize_throttle.h"
#include "anonymize_xact.h"

/* the fewest rows a batch is cut to, to give each process a share */
#define REWRITE_MIN_BATCH	100

/* one batch: matches [from, to), rows done + 1 on of total in its table */
typedef struct RewriteBatch
{
	int64		from;
	int64		to;
	int64		done;
	int64		total;
} RewriteBatch;

/* a target in the shared memory: its strings as offsets, -1 for NULL */
typedef struct RewriteTarget
{
	Oid			relid;
	int			kind;
	int			scope;
	Oid			time_type;
	Oid			col_type;
	bool		erase_null;
	int32		name;
	int32		col;
	int32		time_col;
	int32		replacement;	/* resolved: the setting's, if the target has none */
} RewriteTarget;

/*
 * A worker's message about a batch: 'R', the rows it rewrote, and per
 * request of the batch (anonymize_run_batch_requests()) n counts in data;
 * or 'F', the message (n bytes) of the error that failed its target.
 */
typedef struct RewriteMsg
{
	char		kind;
	int32		batch;
	int64		rewritten;
	int32		n;
	int64		data[FLEXIBLE_ARRAY_MEMBER];
} RewriteMsg;

/* the leader's state, for the workers' messages */
typedef struct RewriteLeader
{
	RunState   *st;
	RewriteBatch *batches;
	int			nbatches;
	int			by_workers;		/* batches the workers rewrote or failed */
} RewriteLeader;

/* the batches, in the shared memory sh */
static inline RewriteBatch *
rewrite_batches(ParallelShared *sh)
{
	return (RewriteBatch *) ((char *) sh + sh->batches_off);
}

/* the targets, in the shared memory sh (their strings follow them) */
static inline RewriteTarget *
rewrite_targets(ParallelShared *sh)
{
	return (RewriteTarget *) ((char *) sh + sh->targets_off);
}

/* the failed flag of target t, in the shared memory sh */
static inline pg_atomic_uint32 *
rewrite_tfailed(ParallelShared *sh, int t)
{
	return &((pg_atomic_uint32 *) ((char *) sh + sh->tfailed_off))[t];
}

/* ---------------------------------------------------------------------
 * The leader
 * ---------------------------------------------------------------------
 */

/*
 * Cut the matches into batches for participants processes: per (target,
 * leaf) group, at most anonymize.batch_size rows, and no more than a
 * process's share of the group unless that is under REWRITE_MIN_BATCH.
 */
static RewriteBatch *
rewrite_cut(RunState *st, int participants, int *nbatches)
{
	int64		cap = Max(anonymize_batch_size, 1);
	int			max = 16;
	RewriteBatch *batches = palloc(sizeof(RewriteBatch) * max);
	int64		start = 0;

	*nbatches = 0;
	while (start < st->nmatches)
	{
		int64		end = anonymize_run_group_end(st, start);
		int64		size;

		size = Min(cap, Max((end - start + participants - 1) / participants,
							REWRITE_MIN_BATCH));
		for (int64 b = start; b < end; b += size)
		{
			if (*nbatches == max)
			{
				max *= 2;
				batches = repalloc(batches, sizeof(RewriteBatch) * max);
			}
			batches[*nbatches].from = b;
			batches[*nbatches].to = Min(b + size, end);
			batches[*nbatches].done = b - start;
			batches[*nbatches].total = end - start;
			(*nbatches)++;
		}
		start = end;
	}
	return batches;
}

/* Copy s into text at *used: its offset, or -1 for NULL. */
static int32
rewrite_put(char *text, int32 *used, const char *s)
{
	int32		off = *used;

	if (s == NULL)
		return -1;
	strcpy(text + off, s);
	*used += strlen(s) + 1;
	return off;
}

/*
 * The bytes the targets take in the shared memory, with their strings
 * (the replacement resolved).
 */
static Size
rewrite_targets_size(RunState *st)
{
	Size		size = sizeof(RewriteTarget) * Max(st->ntargets, 1);

	for (int t = 0; t < st->ntargets; t++)
	{
		AnonymizeTarget *target = &st->targets[t];
		const char *repl = anonymize_run_replacement(target);

		size += strlen(target->name) + strlen(target->col) +
			strlen(target->time_col) + 3 + (repl ? strlen(repl) + 1 : 0);
	}
	return size;
}

/* The targets, into the shared memory, with each one's failed flag. */
static void
rewrite_copy_targets(ParallelShared *sh, RunState *st)
{
	RewriteTarget *dst = rewrite_targets(sh);
	char	   *text = (char *) (dst + Max(st->ntargets, 1));
	int32		used = 0;

	sh->ntargets = st->ntargets;
	for (int t = 0; t < st->ntargets; t++)
	{
		AnonymizeTarget *src = &st->targets[t];

		dst[t].relid = src->relid;
		dst[t].kind = src->kind;
		dst[t].scope = src->scope;
		dst[t].time_type = src->time_type;
		dst[t].col_type = src->col_type;
		dst[t].erase_null = src->erase_null;
		dst[t].name = rewrite_put(text, &used, src->name);
		dst[t].col = rewrite_put(text, &used, src->col);
		dst[t].time_col = rewrite_put(text, &used, src->time_col);
		dst[t].replacement = rewrite_put(text, &used, anonymize_run_replacement(src));
		pg_atomic_init_u32(rewrite_tfailed(sh, t), st->tfailed[t] != NULL);
	}
}

/*
 * The segment of the rewrite and the leader's state, for nworkers
 * workers: requests, batches, matches, targets, queues; NULL when no
 * segment is free.
 */
static ParallelLeader *
rewrite_setup(RunState *st, RewriteBatch *batches, int nbatches, int nworkers)
{
	ParallelShared layout;
	ParallelLeader *pl;

	memset(&layout, 0, sizeof(layout));
	layout.batches_off = anonymize_parallel_layout_requests(&layout, sizeof(ParallelShared),
															st->reqs, st->nreqs);
	layout.matches_off = layout.batches_off + MAXALIGN(sizeof(RewriteBatch) * nbatches);
	layout.targets_off = layout.matches_off + MAXALIGN(sizeof(RunMatch) * st->nmatches);
	layout.tfailed_off = layout.targets_off + MAXALIGN(rewrite_targets_size(st));
	layout.queue_off = layout.tfailed_off +
		MAXALIGN(sizeof(pg_atomic_uint32) * Max(st->ntargets, 1));
	layout.nbatches = nbatches;
	layout.nmatches = st->nmatches;
	pl = anonymize_parallel_create(&layout, layout.queue_off +
								   (Size) nworkers * PARALLEL_QUEUE_SIZE,
								   nworkers, "rewrite");
	if (pl == NULL)
		return NULL;
	anonymize_parallel_fill_header(pl->sh, st->run_id, NULL, InvalidOid, nworkers);
	anonymize_parallel_copy_requests(pl->sh, st->reqs, st->nreqs);
	memcpy(rewrite_batches(pl->sh), batches, sizeof(RewriteBatch) * nbatches);
	memcpy((char *) pl->sh + pl->sh->matches_off, st->matches,
		   sizeof(RunMatch) * st->nmatches);
	rewrite_copy_targets(pl->sh, st);
	pg_atomic_init_u32(&pl->sh->next_batch, 0);
	pg_atomic_init_u32(&pl->sh->noted, anonymize_scrub_noting() ? 0 : nbatches);
	return pl;
}

/* Each target with matches checked before its first batch, as serially. */
static void
rewrite_check_targets(RunState *st)
{
	for (int64 i = 0; i < st->nmatches; i++)
		if (i == 0 || st->matches[i].target != st->matches[i - 1].target)
			(void) anonymize_run_target_usable(st, st->matches[i].target);
}

/* The targets the leader failed, flagged for the workers. */
static void
rewrite_share_failed(ParallelShared *sh, RunState *st)
{
	for (int t = 0; t < st->ntargets; t++)
		if (st->tfailed[t] != NULL)
			pg_atomic_write_u32(rewrite_tfailed(sh, t), 1);
}

/* A worker's message: its batch's outcome, kept as the leader's own. */
static void
rewrite_message(ParallelLeader *pl, int i, Size len, void *data)
{
	RewriteLeader *rl = (RewriteLeader *) pl->state;
	RunState   *st = rl->st;
	RewriteMsg	msg;
	RewriteBatch *batch;
	int		   *ids;
	int			nids;
	int64	   *rcount;

	if (len < offsetof(RewriteMsg, data))
		elog(ERROR, "anonymize run: malformed message from a parallel rewrite worker");
	memcpy(&msg, data, offsetof(RewriteMsg, data));
	if (msg.batch < 0 || msg.batch >= rl->nbatches || msg.n < 0 ||
		len != offsetof(RewriteMsg, data) +
		(msg.kind == 'F' ? (Size) msg.n : sizeof(int64) * msg.n))
		elog(ERROR, "anonymize run: malformed message from a parallel rewrite worker");
	batch = &rl->batches[msg.batch];
	rl->by_workers++;
	if (msg.kind == 'F')
	{
		char	   *reason = pnstrdup((char *) data + offsetof(RewriteMsg, data), msg.n);

		anonymize_run_batch_outcome(st, batch->from, NULL, 0, NULL, 0, reason);
		rewrite_share_failed(pl->sh, st);
		pfree(reason);
		return;
	}
	ids = anonymize_run_batch_requests(st, batch->from, batch->to - batch->from,
									   &nids);
	if (nids != msg.n)
		elog(ERROR, "anonymize run: malformed message from a parallel rewrite worker");
	rcount = palloc(sizeof(int64) * Max(nids, 1));
	memcpy(rcount, (char *) data + offsetof(RewriteMsg, data), sizeof(int64) * nids);
	anonymize_run_batch_outcome(st, batch->from, ids, nids, rcount, msg.rewritten,
								NULL);
	pfree(rcount);
	pfree(ids);
}

/*
 * Note each batch's pages for the scrub, in order, each batch free for
 * the workers once noted (a failed target's batches are not rewritten).
 */
static void
rewrite_leader_note(ParallelLeader *pl, RewriteLeader *rl)
{
	RunState   *st = rl->st;

	if (pg_atomic_read_u32(&pl->sh->noted) == (uint32) rl->nbatches)
		return;					/* no scrub: nothing to note */
	for (int b = 0; b < rl->nbatches; b++)
	{
		RewriteBatch *batch = &rl->batches[b];
		RunMatch   *first = &st->matches[batch->from];

		CHECK_FOR_INTERRUPTS();
		if (pg_atomic_read_u32(rewrite_tfailed(pl->sh, first->target)) == 0)
		{
			anonymize_xact_begin();
			anonymize_run_activity(st, "rewriting %s, noting rows %lld to %lld of %lld for the scrub",
								   st->targets[first->target].name,
								   (long long) batch->done + 1,
								   (long long) batch->done + (batch->to - batch->from),
								   (long long) batch->total);
			if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(first->leaf)))
				anonymize_run_note_rows(st, &st->targets[first->target],
										first->leaf, batch->from,
										batch->to - batch->from);
			anonymize_xact_commit();
		}
		pg_atomic_write_u32(&pl->sh->noted, b + 1);
		(void) anonymize_parallel_drain(pl);
	}
}

/* The leader's part of the batches, as the workers take theirs. */
static void
rewrite_leader_batches(ParallelLeader *pl, RewriteLeader *rl)
{
	RunState   *st = rl->st;
	uint32		b;

	while ((b = pg_atomic_fetch_add_u32(&pl->sh->next_batch, 1)) < (uint32) rl->nbatches)
	{
		RewriteBatch *batch = &rl->batches[b];

		CHECK_FOR_INTERRUPTS();
		if (pg_atomic_read_u32(rewrite_tfailed(pl->sh, st->matches[batch->from].target)) == 0)
		{
			anonymize_run_rewrite_batch(st, batch->from, batch->to, batch->done,
										batch->total, false);
			rewrite_share_failed(pl->sh, st);
		}
		(void) anonymize_parallel_drain(pl);
		/* the throttle: what the batch cost, slept off at once */
		anonymize_throttle_point();
	}
}

/* The leader's part, then the workers' end; on an error, the workers stopped. */
static void
rewrite_lead(ParallelLeader *pl, RewriteLeader *rl)
{
	PG_TRY();
	{
		rewrite_leader_note(pl, rl);
		rewrite_leader_batches(pl, rl);
		anonymize_parallel_finish(pl);
	}
	PG_CATCH();
	{
		/* a segment made outside a transaction: detached here, or never */
		if (pl->seg != NULL)
			dsm_detach(pl->seg);
		anonymize_throttle_share(1);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* The rewrite shared with the run's workers (anonymize_run_private.h). */
bool
anonymize_run_parallel_rewrite(RunState *st)
{
	int			participants = anonymize_parallel_workers_max() + 1;
	MemoryContext cxt;
	MemoryContext old;
	RewriteLeader rl;
	ParallelLeader *pl;
	int			nworkers;
	int			launched;

	/* off (-1), or fewer rows than the setting or than two batches */
	if (participants < 2 || anonymize_parallel_rewrite_min_rows < 0 ||
		st->nmatches < Max(anonymize_parallel_rewrite_min_rows, 2 * REWRITE_MIN_BATCH))
		return false;
	cxt = AllocSetContextCreate(st->cxt, "anonymize parallel rewrite",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	rl.st = st;
	rl.batches = rewrite_cut(st, participants, &rl.nbatches);
	rl.by_workers = 0;
	nworkers = Min(participants - 1, rl.nbatches - 1);
	pl = NULL;
	if (nworkers > 0)
	{
		rewrite_check_targets(st);
		MemoryContextSwitchTo(cxt);
		pl = rewrite_setup(st, rl.batches, rl.nbatches, nworkers);
	}
	launched = pl != NULL ? anonymize_parallel_start(pl, rewrite_message, &rl) : 0;
	MemoryContextSwitchTo(old);
	if (launched == 0)
	{
		if (nworkers > 0)
			anonymize_parallel_log_serial(st->run_id, pl != NULL,
										  "a parallel rewrite, rewriting serially");
		MemoryContextDelete(cxt);
		return false;
	}
	ereport(LOG,
			(errmsg("anonymize run %lld: parallel rewrite of %lld rows in %d batches with %d processes",
					(long long) st->run_id, (long long) st->nmatches,
					rl.nbatches, launched + 1)));
	rewrite_lead(pl, &rl);
	ereport(LOG,
			(errmsg("anonymize run %lld: parallel rewrite done, %d of %d batches by its workers",
					(long long) st->run_id, rl.by_workers, rl.nbatches)));
	MemoryContextDelete(cxt);
	return true;
}

/* ---------------------------------------------------------------------
 * A worker
 * ---------------------------------------------------------------------
 */

/* The string at offset off of the targets' strings, or NULL. */
static char *
rewrite_get(ParallelShared *sh, int32 off)
{
	char	   *text = (char *) (rewrite_targets(sh) + Max(sh->ntargets, 1));

	return off < 0 ? NULL : text + off;
}

/* The run's state as a batch needs it, from the shared memory. */
static void
rewrite_worker_state(ParallelShared *sh, RunState *st)
{
	RewriteTarget *src = rewrite_targets(sh);

	memset(st, 0, sizeof(*st));
	st->cxt = CurrentMemoryContext;
	st->run_id = sh->run_id;
	st->reqs = anonymize_parallel_worker_requests(sh);
	st->nreqs = sh->nreqs;
	st->ntargets = sh->ntargets;
	st->targets = palloc0(sizeof(AnonymizeTarget) * Max(sh->ntargets, 1));
	for (int t = 0; t < sh->ntargets; t++)
	{
		AnonymizeTarget *dst = &st->targets[t];

		dst->relid = src[t].relid;
		dst->kind = src[t].kind;
		dst->scope = src[t].scope;
		dst->time_type = src[t].time_type;
		dst->col_type = src[t].col_type;
		dst->erase_null = src[t].erase_null;
		dst->name = rewrite_get(sh, src[t].name);
		dst->col = rewrite_get(sh, src[t].col);
		dst->time_col = rewrite_get(sh, src[t].time_col);
		dst->replacement = rewrite_get(sh, src[t].replacement);
	}
	st->matches = (RunMatch *) ((char *) sh + sh->matches_off);
	st->nmatches = sh->nmatches;
}

/* Wait until the leader has noted batch b for the scrub. */
static void
rewrite_wait_noted(ParallelShared *sh, uint32 b)
{
	while (pg_atomic_read_u32(&sh->noted) <= b)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Send why batch b failed its target. */
static void
rewrite_send_failed(shm_mq_handle *mqh, uint32 b, const char *reason)
{
	Size		n = strlen(reason);
	RewriteMsg *msg = palloc0(offsetof(RewriteMsg, data) + n);

	msg->kind = 'F';
	msg->batch = b;
	msg->n = n;
	memcpy(msg->data, reason, n);
	anonymize_parallel_worker_send(mqh, offsetof(RewriteMsg, data) + n, msg, false);
}

/* Rewrite batch b with its receipts, and send the leader its outcome. */
static void
rewrite_worker_batch(ParallelShared *sh, RunState *st, uint32 b,
					 shm_mq_handle *mqh)
{
	RewriteBatch *batch = &rewrite_batches(sh)[b];
	int			t = st->matches[batch->from].target;
	int			n = batch->to - batch->from;
	MemoryContext cxt = CurrentMemoryContext;
	RunBatchOutcome outcome;
	RewriteMsg *msg;
	int		   *ids;
	int			nids;
	char	   *reason;

	/* a failed target's later batches are left, as the serial run leaves them */
	if (pg_atomic_read_u32(rewrite_tfailed(sh, t)) != 0)
		return;
	ids = anonymize_run_batch_requests(st, batch->from, n, &nids);
	msg = palloc0(offsetof(RewriteMsg, data) + sizeof(int64) * nids);
	outcome = anonymize_run_batch(st, batch->from, n, batch->done, batch->total,
								  ids, nids, msg->data, false, &msg->rewritten,
								  &reason);
	MemoryContextSwitchTo(cxt);
	if (outcome == RUN_BATCH_GONE)
		return;
	if (outcome == RUN_BATCH_FAILED)
	{
		pg_atomic_write_u32(rewrite_tfailed(sh, t), 1);
		rewrite_send_failed(mqh, b, reason);
		return;
	}
	msg->kind = 'R';
	msg->batch = b;
	msg->n = nids;
	anonymize_parallel_worker_send(mqh, offsetof(RewriteMsg, data) +
								   sizeof(int64) * nids, msg, false);
}

/* A rewrite worker's part (anonymize_run_parallel.h). */
void
anonymize_run_parallel_rewrite_worker(ParallelShared *sh, shm_mq_handle *mqh)
{
	RunState	st;
	MemoryContext batch_cxt;
	MemoryContext old;
	uint32		b;
	char		done = PARALLEL_MSG_DONE;

	rewrite_worker_state(sh, &st);
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
									  "anonymize rewrite batch",
									  ALLOCSET_DEFAULT_SIZES);
	anonymize_throttle_begin();
	anonymize_throttle_share(sh->participants);
	while ((b = pg_atomic_fetch_add_u32(&sh->next_batch, 1)) < (uint32) sh->nbatches)
	{
		rewrite_wait_noted(sh, b);
		old = MemoryContextSwitchTo(batch_cxt);
		rewrite_worker_batch(sh, &st, b, mqh);
		MemoryContextSwitchTo(old);
		MemoryContextReset(batch_cxt);
		/* the throttle: what the batch cost, slept off at once */
		anonymize_throttle_point();
	}
	anonymize_throttle_end();
	anonymize_parallel_worker_send(mqh, 1, &done, true);
}
