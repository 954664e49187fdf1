/*-------------------------------------------------------------------------
 *
 * anonymize_run_worker.c
 *	  The dynamic background worker that executes the run of
 *	  anonymize.run() (see anonymize_run_sql.c, which starts it): it maps
 *	  the shared memory of its caller, joins the caller's lock group,
 *	  connects to the caller's database, executes the run
 *	  (anonymize_run_execute_ext), answers the caller as soon as the run
 *	  has committed, and waits for the caller's transaction to end before
 *	  the run vacuums.  An error before the commit goes back to the caller.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "anonymize_run_worker.h"

/* how long the worker waits for its caller's transaction to end */
#define RUN_CALLER_WAIT_MS	(10 * 60 * 1000)

/* Wake the caller of run(), which waits on its latch. */
static void
run_worker_notify_caller(RunShared *shared)
{
	SetLatch(&ProcGlobal->allProcs[shared->caller_pgprocno].procLatch);
}

/* Wait until the transaction that called run() has ended (or ten minutes). */
static void
run_worker_wait_for_caller(RunShared *shared)
{
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

/* the run has committed: answer the caller, then wait for it to finish */
static void
run_worker_committed(void *arg, const AnonymizeRunResult *result)
{
	RunShared  *shared = (RunShared *) arg;

	SpinLockAcquire(&shared->mutex);
	shared->result = *result;
	shared->state = RUN_STATE_DONE;
	SpinLockRelease(&shared->mutex);
	run_worker_notify_caller(shared);
	run_worker_wait_for_caller(shared);
}

/* Hand an error of the run to the caller, unless the run had committed. */
static void
run_worker_report_error(RunShared *shared)
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
	run_worker_notify_caller(shared);
}

/* The worker's entry point: the run of anonymize.run(), for its caller. */
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
		anonymize_run_execute_ext(&result, "run()", run_worker_committed, shared);
	}
	PG_CATCH();
	{
		run_worker_report_error(shared);
		PG_RE_THROW();
	}
	PG_END_TRY();

	dsm_detach(seg);
	proc_exit(0);
}
