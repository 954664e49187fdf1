/*-------------------------------------------------------------------------
 *
 * anonymize_run_sql.c
 *	  anonymize.run(): the erasure run on demand.  It starts a dynamic
 *	  background worker (anonymize_run_worker.c) that connects to this
 *	  database and executes the run, waits until the run has committed, and
 *	  returns the number of requests it finished; an error in the worker is
 *	  raised again here with its SQLSTATE.  Works without
 *	  shared_preload_libraries.
 *
 * Why a worker: the run commits once per batch and ends with VACUUM, which
 * no function can do inside its caller's transaction.  The caller's own
 * snapshot would also keep the old row versions alive, so the worker
 * answers as soon as the run has committed, then waits for the caller's
 * transaction to end before it vacuums (holding the run lock until done:
 * a next run, or pg_advisory_lock on the run lock, waits for that).
 *
 * The worker joins its caller's lock group, so that a run waiting for a
 * lock shows as its caller waiting (pg_blocking_pids, isolation tests).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "anonymize_citus.h"
#include "anonymize_run_worker.h"

PG_FUNCTION_INFO_V1(anonymize_run_sql);

/* the worker of this session's previous run(), maybe still vacuuming */
static BackgroundWorkerHandle *previous_worker = NULL;

/* Refuse a caller that cannot wait for a run: a standby, a writing xact. */
static void
run_sql_check_caller(void)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("anonymize.run() cannot run on a hot standby"),
				 errhint("Call it on the primary; its changes reach the standby by replication.")));
	if (GetTopTransactionIdIfAny() != InvalidTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("anonymize.run() cannot be called in a transaction that has written"),
				 errdetail("The run works in transactions of its own and could wait for this one forever."),
				 errhint("Call anonymize.run() in a transaction of its own.")));
}

/*
 * Our previous worker may still be vacuuming; being of our lock group it
 * would not make the next one wait for the run lock, so wait here.
 */
static void
run_sql_wait_previous(void)
{
	if (previous_worker != NULL)
	{
		(void) WaitForBackgroundWorkerShutdown(previous_worker);
		pfree(previous_worker);
		previous_worker = NULL;
	}
}

/* The shared memory of the worker, with this caller's identity. */
static dsm_segment *
run_sql_create_shared(void)
{
	dsm_segment *seg = dsm_create(sizeof(RunShared), 0);
	RunShared  *shared = dsm_segment_address(seg);

	memset(shared, 0, sizeof(RunShared));
	SpinLockInit(&shared->mutex);
	shared->state = RUN_STATE_STARTING;
	shared->database = MyDatabaseId;
	shared->caller_pid = MyProcPid;
	shared->caller_pgprocno = anonymize_proc_number(MyProc);
	shared->caller_backend = anonymize_my_backend;
	shared->caller_lxid = anonymize_proc_lxid(MyProc);
	return seg;
}

/* Register the worker and wait for it to start; it becomes previous_worker. */
static BackgroundWorkerHandle *
run_sql_start_worker(dsm_segment *seg)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;
	bool		registered;
	pid_t		pid;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "anonymize", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "anonymize_run_worker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "anonymize run() for PID %d", MyProcPid);
	strlcpy(worker.bgw_type, "anonymize run()", BGW_MAXLEN);
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = MyProcPid;

	/* the handle outlives this call: see previous_worker */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(oldcxt);
	if (!registered)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start the anonymize run worker"),
				 errdetail("Every background worker slot is in use."),
				 errhint("Raise max_worker_processes, or call anonymize.run() again later.")));

	previous_worker = handle;
	if (WaitForBackgroundWorkerStartup(handle, &pid) == BGWH_POSTMASTER_DIED)
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("the postmaster died while anonymize.run() was starting")));
	return handle;
}

/* Wait until the run has committed or failed, or the worker has exited. */
static int
run_sql_wait(RunShared *shared, BackgroundWorkerHandle *handle)
{
	bool		stopped = false;
	int			state;
	pid_t		pid;

	for (;;)
	{
		BgwHandleStatus status;

		SpinLockAcquire(&shared->mutex);
		state = shared->state;
		SpinLockRelease(&shared->mutex);
		if (state != RUN_STATE_STARTING || stopped)
			break;
		status = GetBackgroundWorkerPid(handle, &pid);
		if (status == BGWH_STOPPED || status == BGWH_POSTMASTER_DIED)
			stopped = true;		/* look at the state once more */
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	return state;
}

/* Raise the worker's error here, with its SQLSTATE, detail and hint. */
static void
run_sql_raise(dsm_segment *seg, RunShared *shared)
{
	int			code = shared->sqlerrcode;
	char	   *message = pstrdup(shared->message);
	char	   *detail = shared->detail[0] ? pstrdup(shared->detail) : NULL;
	char	   *hint = shared->hint[0] ? pstrdup(shared->hint) : NULL;

	dsm_detach(seg);
	ereport(ERROR,
			(errcode(code),
			 errmsg_internal("%s", message),
			 detail ? errdetail_internal("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/* anonymize.run() returns integer */
Datum
anonymize_run_sql(PG_FUNCTION_ARGS)
{
	dsm_segment *seg;
	RunShared  *shared;
	BackgroundWorkerHandle *handle;
	int			state;

	run_sql_check_caller();
	anonymize_citus_refuse_worker_node();
	run_sql_wait_previous();
	seg = run_sql_create_shared();
	shared = dsm_segment_address(seg);
	BecomeLockGroupLeader();
	handle = run_sql_start_worker(seg);

	state = run_sql_wait(shared, handle);
	if (state == RUN_STATE_DONE)
	{
		int64		done = shared->result.requests_done;

		dsm_detach(seg);
		PG_RETURN_INT32((int32) Min(done, PG_INT32_MAX));
	}
	if (state == RUN_STATE_ERROR)
		run_sql_raise(seg, shared);
	dsm_detach(seg);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the anonymize run worker exited before the run committed"),
			 errhint("See the server log; requests it left Running are finished by the next run.")));
	PG_RETURN_NULL();
}
