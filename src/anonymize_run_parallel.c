/*-------------------------------------------------------------------------
 *
 * anonymize_run_parallel.c
 *	  The leader's side of the run's parallel scan (see
 *	  anonymize_run_parallel.h): the shared memory (requests, target,
 *	  parallel scan descriptor with the leader's snapshot, or the whole
 *	  tables, one queue per worker), the workers' start, the leader's own
 *	  share of the blocks or tables, and the matches the workers send,
 *	  reported to the run's callback.  What the parallel rewrite
 *	  (anonymize_run_parallel_rewrite.c) shares with it is here too: the
 *	  segment and its queues, the requests' copy, the workers' start, their
 *	  messages and their end.
 *
 * The workers join the run's lock group (the caller of run(), or the run
 * itself when scheduled), so that a lock they wait for behind the run's
 * own cannot deadlock unseen.  A worker that stops before it has sent the
 * end of its scan fails the scan; the leader's error or exit detaches the
 * shared memory, which terminates the workers.  Nothing here logs an
 * identifier: the matches travel in shared memory only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tableam.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/bufmgr.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "anonymize_ledger.h"
#include "anonymize_run_parallel.h"
#include "anonymize_settings.h"
#include "anonymize_throttle.h"

/* How many workers the run may start besides itself. */
int
anonymize_parallel_workers_max(void)
{
	return Max(Min(anonymize_max_parallel_workers, max_worker_processes) - 1, 0);
}

/* How many workers besides the leader for a table of nblocks blocks. */
static int
parallel_workers_wanted(BlockNumber nblocks)
{
	int			n = anonymize_parallel_workers_max();

	if (n <= 0 || nblocks < (BlockNumber) anonymize_parallel_min_table_size)
		return 0;
	/* at least one block each, beyond the leader's */
	return Min(n, (int) Max(nblocks, 1) - 1);
}

/* The offsets of the requests, their emails and the email text, from off. */
Size
anonymize_parallel_layout_requests(ParallelShared *sh, Size off,
								   AnonymizeRequest *reqs, int nreqs)
{
	Size		text = 0;

	for (int i = 0; i < nreqs; i++)
		if (reqs[i].email != NULL)
			text += strlen(reqs[i].email) + 1;
	sh->reqs_off = MAXALIGN(off);
	sh->email_off = sh->reqs_off + MAXALIGN(sizeof(AnonymizeRequest) * Max(nreqs, 1));
	sh->text_off = sh->email_off + MAXALIGN(sizeof(int32) * Max(nreqs, 1));
	return sh->text_off + MAXALIGN(Max(text, 1));
}

/* The offsets of a scan's parts of the shared memory, and its size. */
static Size
parallel_layout(ParallelShared *sh, AnonymizeMatchSet *ms,
				AnonymizeRequest *reqs, int nreqs, Relation leaf,
				int nleaves, Snapshot snapshot, int nworkers)
{
	AnonymizeLedgerSet *ls = anonymize_matchset_ledger(ms);

	sh->ms_off = anonymize_parallel_layout_requests(sh, sizeof(ParallelShared),
													reqs, nreqs);
	sh->ledger_off = ls ? sh->ms_off + MAXALIGN(anonymize_matchset_flat_size(ms)) : 0;
	sh->pscan_off = sh->ms_off + MAXALIGN(anonymize_matchset_flat_size(ms)) +
		(ls ? MAXALIGN(anonymize_ledger_set_flat_size(ls)) : 0);
	if (nleaves > 0)
	{
		/* whole tables: their OIDs and the snapshot instead of a scan */
		sh->nleaves = nleaves;
		sh->leaves_off = sh->pscan_off;
		sh->snap_off = sh->leaves_off + MAXALIGN(sizeof(Oid) * nleaves);
		sh->queue_off = sh->snap_off + MAXALIGN(EstimateSnapshotSpace(snapshot));
		sh->pscan_off = 0;
	}
	else
		sh->queue_off = sh->pscan_off + MAXALIGN(table_parallelscan_estimate(leaf, snapshot));
	return sh->queue_off + (Size) nworkers * PARALLEL_QUEUE_SIZE;
}

/* Copy the requests, with their emails, into the shared memory. */
void
anonymize_parallel_copy_requests(ParallelShared *sh, AnonymizeRequest *reqs,
								 int nreqs)
{
	AnonymizeRequest *dst = (AnonymizeRequest *) ((char *) sh + sh->reqs_off);
	int32	   *email = (int32 *) ((char *) sh + sh->email_off);
	char	   *text = (char *) sh + sh->text_off;
	int32		used = 0;

	sh->nreqs = nreqs;
	for (int i = 0; i < nreqs; i++)
	{
		dst[i] = reqs[i];
		dst[i].email = NULL;
		email[i] = -1;
		if (reqs[i].email != NULL)
		{
			strcpy(text + used, reqs[i].email);
			email[i] = used;
			used += strlen(reqs[i].email) + 1;
		}
	}
}

/* Fill the header: who leads, the target of a scan, the settings. */
void
anonymize_parallel_fill_header(ParallelShared *sh, int64 run_id,
							   AnonymizeTarget *target, Oid leaf, int nworkers)
{
	PGPROC	   *leader = MyProc->lockGroupLeader;

	/* the scheduled run leads a group of its own; run()'s joined its caller's */
	if (leader == NULL)
	{
		BecomeLockGroupLeader();
		leader = MyProc;
	}
	sh->database = MyDatabaseId;
	sh->userid = GetUserId();
	sh->leaf = leaf;
	sh->leader_pid = leader->pid;
	sh->participants = nworkers + 1;
	sh->nworkers = nworkers;
	sh->run_id = run_id;
	if (target != NULL)
	{
		strlcpy(sh->col, target->col, NAMEDATALEN);
		strlcpy(sh->time_col, target->time_col, NAMEDATALEN);
		sh->kind = target->kind;
		sh->scope = target->scope;
		sh->time_type = target->time_type;
		sh->col_type = target->col_type;
	}
	strlcpy(sh->country_code, anonymize_country_code ? anonymize_country_code : "",
			sizeof(sh->country_code));
	strlcpy(sh->trunk_prefix, anonymize_trunk_prefix ? anonymize_trunk_prefix : "",
			sizeof(sh->trunk_prefix));
}

/* On the segment's detach (the work's end, an error, an exit): stop the workers. */
static void
parallel_on_detach(dsm_segment *seg, Datum arg)
{
	ParallelLeader *pl = (ParallelLeader *) DatumGetPointer(arg);

	for (int i = 0; i < pl->nworkers; i++)
		if (pl->handles[i] != NULL)
			TerminateBackgroundWorker(pl->handles[i]);
}

/* Start the workers and attach their queues; how many started. */
static int
parallel_launch(ParallelLeader *pl)
{
	BackgroundWorker worker;
	int			launched = 0;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "anonymize", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "anonymize_run_parallel_main", BGW_MAXLEN);
	snprintf(worker.bgw_type, BGW_MAXLEN, "anonymize parallel %s", pl->what);
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(pl->seg));
	worker.bgw_notify_pid = MyProcPid;
	for (int i = 0; i < pl->nworkers; i++)
	{
		shm_mq	   *mq = anonymize_parallel_queue(pl->sh, i);

		snprintf(worker.bgw_name, BGW_MAXLEN, "anonymize run %lld %s worker %d",
				 (long long) pl->sh->run_id, pl->what, i + 1);
		memcpy(worker.bgw_extra, &i, sizeof(int));
		if (!RegisterDynamicBackgroundWorker(&worker, &pl->handles[i]))
		{
			pl->handles[i] = NULL;
			break;
		}
		pl->queues[i] = shm_mq_attach(mq, pl->seg, pl->handles[i]);
		launched++;
	}
	pl->nlive = launched;
	return launched;
}

/* One match of a scan worker, for the run's callback. */
static void
parallel_match_message(ParallelLeader *pl, int i, Size len, void *data)
{
	ParallelMatchMsg *msg = (ParallelMatchMsg *) data;

	if (len < offsetof(ParallelMatchMsg, reqs) ||
		len != offsetof(ParallelMatchMsg, reqs) + sizeof(int32) * msg->nreqs + msg->keylen)
		elog(ERROR, "anonymize run: malformed message from a parallel scan worker");
	if (msg->keylen > 0)
		anonymize_matchset_fill_late(pl->ms, (const int *) msg->reqs, msg->nreqs,
									 (const char *) &msg->reqs[msg->nreqs],
									 msg->keylen);
	pl->callback(pl->arg, msg->leaf, &msg->tid, (const int *) msg->reqs,
				 msg->nreqs);
}

/* Take what the workers sent so far; false when nothing came. */
bool
anonymize_parallel_drain(ParallelLeader *pl)
{
	bool		any = false;

	for (int i = 0; i < pl->nworkers; i++)
	{
		while (pl->queues[i] != NULL && !pl->finished[i])
		{
			Size		len;
			void	   *data;
			shm_mq_result res = shm_mq_receive(pl->queues[i], &len, &data, true);

			if (res == SHM_MQ_WOULD_BLOCK)
				break;
			if (res == SHM_MQ_DETACHED &&
				shm_mq_get_sender(anonymize_parallel_queue(pl->sh, i)) == NULL)
			{
				/* never started: it took no work, the others did it */
				pl->finished[i] = true;
				pl->nlive--;
				break;
			}
			if (res == SHM_MQ_DETACHED)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("a parallel %s worker of anonymize run %lld stopped before the end of its %s",
								pl->what, (long long) pl->sh->run_id, pl->what),
						 errhint("The server log has the worker's error.  The next run does the work again; anonymize.max_parallel_workers = 1 runs serially.")));
			any = true;
			if (len == 1 && *(char *) data == PARALLEL_MSG_DONE)
			{
				pl->finished[i] = true;
				pl->nlive--;
				break;
			}
			pl->message(pl, i, len, data);
		}
	}
	return any;
}

/* The leader's poll between rows of its own share: the queues, not waiting. */
static void
parallel_poll(void *arg)
{
	(void) anonymize_parallel_drain((ParallelLeader *) arg);
}

/* After the leader's share: the workers' messages until each has finished. */
static void
parallel_wait(ParallelLeader *pl)
{
	while (pl->nlive > 0)
	{
		if (anonymize_parallel_drain(pl))
			continue;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	/* they exit at once: their slots are free for the next table */
	for (int i = 0; i < pl->nworkers; i++)
		if (pl->handles[i] != NULL)
			(void) WaitForBackgroundWorkerShutdown(pl->handles[i]);
}

/*
 * The segment of size bytes, laid out as layout says, with a queue for
 * each of nworkers workers, and the leader's state, in the current
 * memory context; NULL when the server has no segment free.
 */
ParallelLeader *
anonymize_parallel_create(ParallelShared *layout, Size size, int nworkers,
						  const char *what)
{
	ParallelLeader *pl = palloc0(sizeof(ParallelLeader));

	pl->nworkers = nworkers;
	pl->what = what;
	pl->handles = palloc0(sizeof(BackgroundWorkerHandle *) * nworkers);
	pl->queues = palloc0(sizeof(shm_mq_handle *) * nworkers);
	pl->finished = palloc0(sizeof(bool) * nworkers);
	pl->seg = dsm_create(size, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (pl->seg == NULL)
		return NULL;
	pl->sh = dsm_segment_address(pl->seg);
	*pl->sh = *layout;
	on_dsm_detach(pl->seg, parallel_on_detach, PointerGetDatum(pl));
	for (int i = 0; i < nworkers; i++)
	{
		shm_mq	   *mq = shm_mq_create(anonymize_parallel_queue(pl->sh, i),
									   PARALLEL_QUEUE_SIZE);

		shm_mq_set_receiver(mq, MyProc);
	}
	return pl;
}

/*
 * The segment and the leader's state for nworkers workers: to scan the
 * blocks of leaf, or the whole tables leaves[0..nleaves) (leaf NULL).
 */
static ParallelLeader *
parallel_setup(int64 run_id, AnonymizeMatchSet *ms, AnonymizeRequest *reqs,
			   int nreqs, AnonymizeTarget *target, Relation leaf,
			   Relation *leaves, int nleaves, int nworkers)
{
	ParallelLeader *pl;
	ParallelShared layout;
	Snapshot	snapshot = GetActiveSnapshot();
	Size		size;
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	memset(&layout, 0, sizeof(layout));
	size = parallel_layout(&layout, ms, reqs, nreqs, leaf, nleaves, snapshot,
						   nworkers);
	pl = anonymize_parallel_create(&layout, size, nworkers, "scan");
	MemoryContextSwitchTo(old);
	if (pl == NULL)
		return NULL;
	pl->ms = ms;
	anonymize_parallel_fill_header(pl->sh, run_id, target,
								   leaf != NULL ? RelationGetRelid(leaf) : InvalidOid,
								   nworkers);
	anonymize_parallel_copy_requests(pl->sh, reqs, nreqs);
	anonymize_matchset_flatten(ms, (char *) pl->sh + pl->sh->ms_off);
	if (pl->sh->ledger_off != 0)
		anonymize_ledger_set_flatten(anonymize_matchset_ledger(ms),
									 (char *) pl->sh + pl->sh->ledger_off);
	if (leaf != NULL)
		table_parallelscan_initialize(leaf, (ParallelTableScanDesc)
									  ((char *) pl->sh + pl->sh->pscan_off), snapshot);
	else
	{
		for (int i = 0; i < nleaves; i++)
			anonymize_parallel_leaves(pl->sh)[i] = RelationGetRelid(leaves[i]);
		SerializeSnapshot(snapshot, (char *) pl->sh + pl->sh->snap_off);
		pg_atomic_init_u32(&pl->sh->next_leaf, 0);
	}
	return pl;
}

/*
 * Start the workers of pl, whose messages go to message(state); how many
 * started (none: the segment is gone too).
 */
int
anonymize_parallel_start(ParallelLeader *pl,
						 anonymize_parallel_message_fn message, void *state)
{
	int			launched;

	pl->message = message;
	pl->state = state;
	launched = parallel_launch(pl);
	if (launched == 0)
	{
		dsm_detach(pl->seg);
		pl->seg = NULL;
	}
	else
		anonymize_throttle_share(launched + 1);
	return launched;
}

/* Start the workers of a scan, whose matches go to callback(arg). */
static int
parallel_start_scan(ParallelLeader *pl, anonymize_match_callback callback,
					void *arg)
{
	pl->callback = callback;
	pl->arg = arg;
	return anonymize_parallel_start(pl, parallel_match_message, NULL);
}

/*
 * Log why a step of the run goes on in one process: no dynamic shared
 * memory segment was free (segment false), or no background worker slot;
 * step names the step and how it goes on.
 */
void
anonymize_parallel_log_serial(int64 run_id, bool segment, const char *step)
{
	if (!segment)
		ereport(LOG,
				(errmsg("anonymize run %lld: no dynamic shared memory segment free for %s",
						(long long) run_id, step),
				 errhint("Other sessions' parallel queries held every segment the server has; fewer of them at the time of the run leave some free.")));
	else
		ereport(LOG,
				(errmsg("anonymize run %lld: no background worker slot free for %s",
						(long long) run_id, step),
				 errhint("Raise max_worker_processes, or set anonymize.max_parallel_workers to 1.")));
}

/* After the leader's share: the workers' messages, then the segment gone. */
void
anonymize_parallel_finish(ParallelLeader *pl)
{
	parallel_wait(pl);
	anonymize_throttle_share(1);
	dsm_detach(pl->seg);
	pl->seg = NULL;
}

/* Scan leaf with the run's workers (see anonymize_run_parallel.h). */
bool
anonymize_run_parallel_scan(int64 run_id, AnonymizeMatchSet *ms,
							AnonymizeRequest *reqs, int nreqs,
							AnonymizeTarget *target, Relation leaf,
							anonymize_match_callback callback, void *arg)
{
	int			nworkers = parallel_workers_wanted(RelationGetNumberOfBlocks(leaf));
	ParallelLeader *pl;
	TableScanDesc scan;
	int			launched;

	if (nworkers == 0 || anonymize_matchset_empty(ms))
		return false;
	pl = parallel_setup(run_id, ms, reqs, nreqs, target, leaf, NULL, 0,
						nworkers);
	launched = pl != NULL ? parallel_start_scan(pl, callback, arg) : 0;
	if (launched == 0)
	{
		anonymize_parallel_log_serial(run_id, pl != NULL,
									  psprintf("a parallel scan of table \"%s\", scanning it serially",
											   RelationGetRelationName(leaf)));
		return false;
	}
	ereport(LOG,
			(errmsg("anonymize run %lld: parallel scan of table \"%s\" with %d processes",
					(long long) run_id, RelationGetRelationName(leaf), launched + 1)));

	/* the leader's share of the blocks */
	scan = table_beginscan_parallel(leaf, (ParallelTableScanDesc)
									((char *) pl->sh + pl->sh->pscan_off));
	(void) anonymize_engine_scan_rows(ms, target, leaf, scan, callback, arg,
									  parallel_poll, pl);
	table_endscan(scan);
	anonymize_parallel_finish(pl);
	return true;
}

/* a table and its size, for sorting the tables of a scan */
typedef struct ParallelSized
{
	Relation	rel;
	BlockNumber pages;
} ParallelSized;

/* qsort() comparator of sized tables: the largest first */
static int
parallel_cmp_size_desc(const void *a, const void *b)
{
	BlockNumber x = ((const ParallelSized *) a)->pages;
	BlockNumber y = ((const ParallelSized *) b)->pages;

	return (x < y) - (x > y);
}

/* Sort leaves[0..n) largest first, each table's size read once. */
static void
parallel_sort_leaves(Relation *leaves, int n)
{
	ParallelSized *sized = palloc(sizeof(ParallelSized) * n);

	for (int i = 0; i < n; i++)
	{
		sized[i].rel = leaves[i];
		sized[i].pages = RelationGetNumberOfBlocks(leaves[i]);
	}
	qsort(sized, n, sizeof(ParallelSized), parallel_cmp_size_desc);
	for (int i = 0; i < n; i++)
		leaves[i] = sized[i].rel;
	pfree(sized);
}

/*
 * The leader's part of a scan of whole tables: the next one, until none;
 * how many it took.
 */
static int
parallel_leader_leaves(ParallelLeader *pl, AnonymizeTarget *target,
					   Relation *leaves, int nleaves)
{
	uint32		i;
	int			taken = 0;

	while ((i = pg_atomic_fetch_add_u32(&pl->sh->next_leaf, 1)) < (uint32) nleaves)
	{
		TableScanDesc scan = table_beginscan(leaves[i], GetActiveSnapshot(),
											 0, NULL);

		(void) anonymize_engine_scan_rows(pl->ms, target, leaves[i], scan,
										  pl->callback, pl->arg,
										  parallel_poll, pl);
		table_endscan(scan);
		taken++;
	}
	return taken;
}

/* Scan whole tables with the run's workers (see anonymize_run_parallel.h). */
bool
anonymize_run_parallel_leaves(int64 run_id, AnonymizeMatchSet *ms,
							  AnonymizeRequest *reqs, int nreqs,
							  AnonymizeTarget *target, Relation *leaves,
							  int nleaves, anonymize_match_callback callback,
							  void *arg)
{
	int			nworkers = Min(anonymize_parallel_workers_max(), nleaves - 1);
	ParallelLeader *pl;
	int			launched;
	int			own;

	if (nworkers <= 0 || anonymize_matchset_empty(ms))
		return false;
	parallel_sort_leaves(leaves, nleaves);
	pl = parallel_setup(run_id, ms, reqs, nreqs, target, NULL, leaves, nleaves,
						nworkers);
	launched = pl != NULL ? parallel_start_scan(pl, callback, arg) : 0;
	if (launched == 0)
	{
		anonymize_parallel_log_serial(run_id, pl != NULL,
									  psprintf("a parallel scan of %d tables of target \"%s\", scanning them serially",
											   nleaves, target->name));
		return false;
	}
	ereport(LOG,
			(errmsg("anonymize run %lld: parallel scan of %d tables of target \"%s\" with %d processes, each table by one",
					(long long) run_id, nleaves, target->name, launched + 1)));

	own = parallel_leader_leaves(pl, target, leaves, nleaves);
	anonymize_parallel_finish(pl);
	ereport(LOG,
			(errmsg("anonymize run %lld: parallel scan of %d tables of target \"%s\" done, %d of them by its workers",
					(long long) run_id, nleaves, target->name, nleaves - own)));
	return true;
}
