/*-------------------------------------------------------------------------
 *
 * anonymize_run_sql.c
 *	  anonymize.run(): the erasure run on demand.  It starts a dynamic
 *	  background worker that connects to this database and executes the run
 *	  (anonymize_run_execute_ext), waits until the run has committed, and
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
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "anonymize_compat.h"
#include "anonymize_run.h"

PG_FUNCTION_INFO_V1(anonymize_run_sql);

PGDLLEXPORT void anonymize_run_worker_main(Datum main_arg);

#define RUN_STATE_STARTING	0
#define RUN_STATE_DONE		1
#define RUN_STATE_ERROR		2

#define RUN_MSG_LEN			1024

/* how long the worker waits for its caller's transaction to end */
#define RUN_CALLER_WAIT_MS	(10 * 60 * 1000)

/* the worker of this session's previous run(), maybe still vacuuming */
static BackgroundWorkerHandle *previous_worker = NULL;

/* the dynamic shared memory segment between run() and its worker */
typedef struct RunShared
{
	slock_t		mutex;
	int			state;
	Oid			database;
	int			caller_pid;
	int			caller_pgprocno;
	AnonymizeBackend caller_backend;
	LocalTransactionId caller_lxid;
	AnonymizeRunResult result;
	int			sqlerrcode;
	char		message[RUN_MSG_LEN];
	char		detail[RUN_MSG_LEN];
	char		hint[RUN_MSG_LEN];
} RunShared;

static void
notify_caller(RunShared *shared)
{
	SetLatch(&ProcGlobal->allProcs[shared->caller_pgprocno].procLatch);
}

/* the run has committed: answer the caller, then wait for it to finish */
static void
run_committed(void *arg, const AnonymizeRunResult *result)
{
	RunShared  *shared = (RunShared *) arg;

	SpinLockAcquire(&shared->mutex);
	shared->result = *result;
	shared->state = RUN_STATE_DONE;
	SpinLockRelease(&shared->mutex);
	notify_caller(shared);

	pgstat_report_activity(STATE_RUNNING,
						   "anonymize run: waiting for the transaction that called run() to end, to vacuum");
	for (int waited = 0;; waited += 20)
	{
		PGPROC	   *proc = anonymize_backend_proc(shared->caller_backend);

		if (proc == NULL || proc->pid != shared->caller_pid ||
			anonymize_proc_lxid(proc) != shared->caller_lxid)
			break;
		if (waited >= RUN_CALLER_WAIT_MS)
		{
			ereport(LOG,
					(errmsg("anonymize run: the transaction that called run() is still open; vacuuming now may leave old row versions"),
					 errhint("Call anonymize.run() in a transaction of its own.")));
			break;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

void
anonymize_run_worker_main(Datum main_arg)
{
	dsm_segment *seg;
	RunShared  *shared;
	AnonymizeRunResult result;
	PGPROC	   *leader;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not map the shared memory of anonymize.run()")));
	shared = dsm_segment_address(seg);

	/* show a run waiting for a lock as its caller waiting */
	leader = BackendPidGetProc(shared->caller_pid);
	if (leader != NULL && leader->lockGroupLeader == leader)
		(void) BecomeLockGroupMember(leader, shared->caller_pid);

	BackgroundWorkerInitializeConnectionByOid(shared->database, InvalidOid, 0);

	/* the server's configuration, as the scheduled run has it */
	ProcessConfigFile(PGC_SIGHUP);

	/*
	 * In its caller's lock group this process cannot lead parallel workers
	 * (they could not join the group and would wait for its locks).
	 */
	SetConfigOption("max_parallel_workers_per_gather", "0", PGC_USERSET,
					PGC_S_OVERRIDE);

	PG_TRY();
	{
		anonymize_run_execute_ext(&result, "run()", run_committed, shared);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		SpinLockAcquire(&shared->mutex);
		if (shared->state == RUN_STATE_STARTING)
		{
			shared->state = RUN_STATE_ERROR;
			shared->sqlerrcode = edata->sqlerrcode;
			strlcpy(shared->message, edata->message ? edata->message : "", RUN_MSG_LEN);
			strlcpy(shared->detail, edata->detail ? edata->detail : "", RUN_MSG_LEN);
			strlcpy(shared->hint, edata->hint ? edata->hint : "", RUN_MSG_LEN);
		}
		SpinLockRelease(&shared->mutex);
		notify_caller(shared);
		PG_RE_THROW();
	}
	PG_END_TRY();

	dsm_detach(seg);
	proc_exit(0);
}

/* anonymize.run() returns integer */
Datum
anonymize_run_sql(PG_FUNCTION_ARGS)
{
	dsm_segment *seg;
	RunShared  *shared;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;
	BgwHandleStatus status;
	int			state;
	bool		stopped = false;
	bool		registered;
	MemoryContext oldcxt;

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

	/*
	 * Our previous worker may still be vacuuming; being of our lock group
	 * it would not make the next one wait for the run lock, so wait here.
	 */
	if (previous_worker != NULL)
	{
		(void) WaitForBackgroundWorkerShutdown(previous_worker);
		pfree(previous_worker);
		previous_worker = NULL;
	}

	seg = dsm_create(sizeof(RunShared), 0);
	shared = dsm_segment_address(seg);
	memset(shared, 0, sizeof(RunShared));
	SpinLockInit(&shared->mutex);
	shared->state = RUN_STATE_STARTING;
	shared->database = MyDatabaseId;
	shared->caller_pid = MyProcPid;
	shared->caller_pgprocno = anonymize_proc_number(MyProc);
	shared->caller_backend = anonymize_my_backend;
	shared->caller_lxid = anonymize_proc_lxid(MyProc);
	BecomeLockGroupLeader();

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
	status = WaitForBackgroundWorkerStartup(handle, &pid);
	if (status == BGWH_POSTMASTER_DIED)
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("the postmaster died while anonymize.run() was starting")));

	for (;;)
	{
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

	if (state == RUN_STATE_DONE)
	{
		int64		done = shared->result.requests_done;

		dsm_detach(seg);
		PG_RETURN_INT32((int32) Min(done, PG_INT32_MAX));
	}
	if (state == RUN_STATE_ERROR)
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
	dsm_detach(seg);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the anonymize run worker exited before the run committed"),
			 errhint("See the server log; requests it left Running are finished by the next run.")));
	PG_RETURN_NULL();
}
