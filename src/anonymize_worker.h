/*-------------------------------------------------------------------------
 *
 * anonymize_worker.h
 *	  The background worker that runs the erasure daily and on wake(), and
 *	  the shared memory through which it reports to status() and is woken
 *	  by wake().
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_WORKER_H
#define ANONYMIZE_WORKER_H

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

/* what the worker is doing, for status() */
typedef enum AnonymizeWorkerState
{
	ANONYMIZE_WORKER_NOT_RUNNING = 0,	/* not started yet, or restarting */
	ANONYMIZE_WORKER_STARTING,
	ANONYMIZE_WORKER_NO_EXTENSION,	/* waiting for CREATE EXTENSION */
	ANONYMIZE_WORKER_STANDBY,	/* hot standby: idle */
	ANONYMIZE_WORKER_WAITING,	/* until the next scheduled run */
	ANONYMIZE_WORKER_DISABLED,	/* anonymize.enabled = off: wake() only */
	ANONYMIZE_WORKER_RUNNING
} AnonymizeWorkerState;

#define ANONYMIZE_WORKER_TEXTLEN 32

typedef struct AnonymizeWorkerShared
{
	slock_t		mutex;
	pid_t		pid;			/* 0 when not running */
	Latch	   *latch;			/* the worker's latch, NULL when not running */
	bool		wake_requested;
	AnonymizeWorkerState state;
	TimestampTz next_run;		/* 0 when none is scheduled */
	/* the last run this worker started since the server started */
	TimestampTz last_started;	/* 0 when none */
	TimestampTz last_finished;	/* 0 while running or when none */
	char		last_trigger[ANONYMIZE_WORKER_TEXTLEN];
	char		last_outcome[ANONYMIZE_WORKER_TEXTLEN];
	int64		last_requests_done;
	int64		last_requests_held;
	int64		last_requests_failed;
	int64		last_rows_rewritten;
} AnonymizeWorkerShared;

/* NULL unless the module was loaded through shared_preload_libraries */
extern AnonymizeWorkerShared *anonymize_worker_shared;

/* from _PG_init while shared_preload_libraries is processed */
extern void anonymize_worker_register(void);

extern const char *anonymize_worker_state_name(AnonymizeWorkerState state);

extern PGDLLEXPORT void anonymize_worker_main(Datum main_arg);

#endif							/* ANONYMIZE_WORKER_H */
