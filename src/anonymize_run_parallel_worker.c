/*-------------------------------------------------------------------------
 *
 * anonymize_run_parallel_worker.c
 *	  A worker of the run's parallel scan (see anonymize_run_parallel.h),
 *	  and the start of a rewrite worker: it maps the leader's shared
 *	  memory, joins the run's lock group,
 *	  connects to the run's database as the run's user, rebuilds the match
 *	  set from the requests there, scans its share of the table's blocks
 *	  (or the next whole table, until none is left) under the leader's
 *	  snapshot, and sends each matching row (its table, TID and the
 *	  requests it matches) to the leader, then the end of its scan.  A
 *	  rewrite worker goes on in anonymize_run_parallel_rewrite.c.
 *
 * A scan worker writes nothing, and logs no identifier: an error says
 * which table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "anonymize_ledger.h"
#include "anonymize_run_parallel.h"
#include "anonymize_throttle.h"

/* Send one message to the leader; exit when the leader has gone. */
void
anonymize_parallel_worker_send(shm_mq_handle *mqh, Size len, const void *data,
							   bool flush)
{
	if (shm_mq_send(mqh, len, data, false, flush) != SHM_MQ_SUCCESS)
		proc_exit(0);			/* the leader detached: its run ended */
}

/* what the worker's callback needs */
typedef struct ParallelWorkerArg
{
	shm_mq_handle *mqh;
	AnonymizeMatchSet *ms;
	AnonymizeRequest *reqs;
} ParallelWorkerArg;

/*
 * The engine's callback in a worker: the match, to the leader, with the
 * row's key when a late request is among its requests.
 */
static void
parallel_worker_match(void *arg, Oid leaf, ItemPointer tid,
					  const int *reqs, int nreqs)
{
	ParallelWorkerArg *wa = (ParallelWorkerArg *) arg;
	int			keylen = 0;
	const char *key = anonymize_matchset_row_key(wa->ms, &keylen);
	bool		late = false;
	Size		len;
	ParallelMatchMsg *msg;

	for (int i = 0; i < nreqs; i++)
		late |= wa->reqs[reqs[i]].late;
	if (!late)
		keylen = 0;
	len = offsetof(ParallelMatchMsg, reqs) + sizeof(int32) * nreqs + keylen;
	msg = palloc(len);
	msg->leaf = leaf;
	msg->tid = *tid;
	msg->nreqs = nreqs;
	msg->keylen = keylen;
	for (int i = 0; i < nreqs; i++)
		msg->reqs[i] = reqs[i];
	if (keylen > 0)
		memcpy(&msg->reqs[nreqs], key, keylen);
	anonymize_parallel_worker_send(wa->mqh, len, msg, false);
	pfree(msg);
}

/* The requests of the shared memory, in this process's memory. */
AnonymizeRequest *
anonymize_parallel_worker_requests(ParallelShared *sh)
{
	AnonymizeRequest *src = (AnonymizeRequest *) ((char *) sh + sh->reqs_off);
	int32	   *email = (int32 *) ((char *) sh + sh->email_off);
	char	   *text = (char *) sh + sh->text_off;
	AnonymizeRequest *reqs = palloc(sizeof(AnonymizeRequest) * Max(sh->nreqs, 1));

	for (int i = 0; i < sh->nreqs; i++)
	{
		reqs[i] = src[i];
		reqs[i].email = email[i] >= 0 ? pstrdup(text + email[i]) : NULL;
	}
	return reqs;
}

/* The target as the engine needs it, from the shared memory. */
static void
parallel_worker_target(ParallelShared *sh, Relation leaf, AnonymizeTarget *t)
{
	memset(t, 0, sizeof(*t));
	t->relid = RelationGetRelid(leaf);
	t->name = RelationGetRelationName(leaf);
	t->col = sh->col;
	t->time_col = sh->time_col;
	t->kind = sh->kind;
	t->scope = sh->scope;
	t->time_type = sh->time_type;
	t->col_type = sh->col_type;
}

/*
 * The match set of the shared memory, as the leader built it for the
 * target, with the requests and the queue in *wa for the callback; the
 * throttle on, its limit shared.
 */
static AnonymizeMatchSet *
parallel_worker_begin(ParallelShared *sh, shm_mq_handle *mqh,
					  ParallelWorkerArg *wa)
{
	AnonymizeRequest *reqs = anonymize_parallel_worker_requests(sh);
	AnonymizeMatchSet *ms;

	ms = anonymize_matchset_unflatten((char *) sh + sh->ms_off, reqs, sh->nreqs);
	if (sh->ledger_off != 0)
		anonymize_matchset_set_ledger(ms, anonymize_ledger_set_unflatten((char *) sh + sh->ledger_off));
	wa->mqh = mqh;
	wa->ms = ms;
	wa->reqs = reqs;
	anonymize_throttle_begin();
	anonymize_throttle_share(sh->participants);
	return ms;
}

/* Scan this worker's share of the table and send its matches. */
static void
parallel_worker_scan(ParallelShared *sh, shm_mq_handle *mqh)
{
	Relation	leaf;
	AnonymizeMatchSet *ms;
	AnonymizeTarget target;
	TableScanDesc scan;
	ParallelWorkerArg wa;
	char		done = PARALLEL_MSG_DONE;

	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	leaf = table_open(sh->leaf, AccessShareLock);
	parallel_worker_target(sh, leaf, &target);
	ms = parallel_worker_begin(sh, mqh, &wa);
	/* the leader's snapshot, restored from the scan descriptor */
	scan = table_beginscan_parallel(leaf, (ParallelTableScanDesc)
									((char *) sh + sh->pscan_off));
	(void) anonymize_engine_scan_rows(ms, &target, leaf, scan,
									  parallel_worker_match, &wa, NULL, NULL);
	table_endscan(scan);
	anonymize_throttle_end();
	anonymize_parallel_worker_send(mqh, 1, &done, true);

	anonymize_matchset_free(ms);
	table_close(leaf, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * Take the next whole table of the shared memory until none is left, scan
 * each under the leader's snapshot and send its matches; then the end.
 */
static void
parallel_worker_leaves(ParallelShared *sh, shm_mq_handle *mqh)
{
	AnonymizeMatchSet *ms;
	ParallelWorkerArg wa;
	char		done = PARALLEL_MSG_DONE;
	uint32		i;

	StartTransactionCommand();
	PushActiveSnapshot(RestoreSnapshot((char *) sh + sh->snap_off));
	ms = parallel_worker_begin(sh, mqh, &wa);
	while ((i = pg_atomic_fetch_add_u32(&sh->next_leaf, 1)) < (uint32) sh->nleaves)
	{
		/* the leader holds its lock: the table is there */
		Relation	leaf = table_open(anonymize_parallel_leaves(sh)[i],
									  AccessShareLock);
		AnonymizeTarget target;
		TableScanDesc scan;

		parallel_worker_target(sh, leaf, &target);
		scan = table_beginscan(leaf, GetActiveSnapshot(), 0, NULL);
		(void) anonymize_engine_scan_rows(ms, &target, leaf, scan,
										  parallel_worker_match, &wa, NULL, NULL);
		table_endscan(scan);
		table_close(leaf, AccessShareLock);
	}
	anonymize_throttle_end();
	anonymize_parallel_worker_send(mqh, 1, &done, true);

	anonymize_matchset_free(ms);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* The worker's entry point (see anonymize_run_parallel.h). */
void
anonymize_run_parallel_main(Datum main_arg)
{
	dsm_segment *seg;
	ParallelShared *sh;
	shm_mq	   *mq;
	shm_mq_handle *mqh;
	PGPROC	   *leader;
	int			index;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		proc_exit(0);			/* the leader's scan ended before this start */
	sh = dsm_segment_address(seg);
	memcpy(&index, MyBgworkerEntry->bgw_extra, sizeof(int));
	if (index < 0 || index >= sh->nworkers)
		elog(ERROR, "anonymize parallel scan: bad worker number %d", index);
	mq = anonymize_parallel_queue(sh, index);
	shm_mq_set_sender(mq, MyProc);
	mqh = shm_mq_attach(mq, seg, NULL);

	/* in the run's lock group, or not at all */
	leader = BackendPidGetProc(sh->leader_pid);
	if (leader == NULL || !BecomeLockGroupMember(leader, sh->leader_pid))
		proc_exit(0);			/* the run ended: the queue's detach says so */

	BackgroundWorkerInitializeConnectionByOid(sh->database, sh->userid, 0);
	pgstat_report_activity(STATE_RUNNING, sh->nbatches > 0 ?
						   "anonymize parallel rewrite" : "anonymize parallel scan");
	/* the canonical forms as the leader makes them */
	SetConfigOption("anonymize.country_code", sh->country_code, PGC_SUSET,
					PGC_S_OVERRIDE);
	SetConfigOption("anonymize.trunk_prefix", sh->trunk_prefix, PGC_SUSET,
					PGC_S_OVERRIDE);

	if (sh->nbatches > 0)
		anonymize_run_parallel_rewrite_worker(sh, mqh);
	else if (sh->nleaves > 0)
		parallel_worker_leaves(sh, mqh);
	else
		parallel_worker_scan(sh, mqh);

	dsm_detach(seg);
	proc_exit(0);
}
