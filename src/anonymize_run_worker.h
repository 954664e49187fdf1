/*-------------------------------------------------------------------------
 *
 * anonymize_run_worker.h
 *	  What anonymize.run() (anonymize_run_sql.c) shares with the dynamic
 *	  background worker that executes its run (anonymize_run_worker.c): a
 *	  dynamic shared memory segment with the caller's identity, the state
 *	  of the run and, on error, the error to raise again in the caller.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_RUN_WORKER_H
#define ANONYMIZE_RUN_WORKER_H

#include "storage/spin.h"

#include "anonymize_compat.h"
#include "anonymize_run.h"

/* RunShared.state */
#define RUN_STATE_STARTING	0	/* the run has not committed yet */
#define RUN_STATE_DONE		1	/* committed: result holds its counts */
#define RUN_STATE_ERROR		2	/* failed: sqlerrcode, message, detail, hint */

#define RUN_MSG_LEN			1024

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

/* the worker's entry point (bgw_function_name); main_arg: the dsm handle */
extern PGDLLEXPORT void anonymize_run_worker_main(Datum main_arg);

#endif							/* ANONYMIZE_RUN_WORKER_H */
