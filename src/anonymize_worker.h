/*-------------------------------------------------------------------------
 *
 * anonymize_worker.h
 *	  The per-database background workers that run the erasure daily and
 *	  on wake(), their slot in shared memory (through which they report to
 *	  status() and are woken by wake()), and the launcher that starts them.
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

/*
 * One database's worker, in shared memory: a slot.  dboid changes only
 * under the slots' lock (anonymize_slots.c); the rest under mutex.
 */
typedef struct AnonymizeWorkerShared
{
	slock_t		mutex;
	Oid			dboid;			/* InvalidOid: the slot is free */
	pid_t		pid;			/* 0 when not running */
	Latch	   *latch;			/* the worker's latch, NULL when not running */
	bool		wake_requested;
	bool		start_requested;	/* CREATE EXTENSION asked for a worker */
	bool		no_extension;	/* the worker left: no extension there */
	bool		extension_seen; /* the worker found the extension */
	bool		recheck_extension;	/* DROP EXTENSION committed: look again */
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

/* the launcher's own worker, registered from _PG_init at preload */
extern void anonymize_launcher_register(void);
extern PGDLLEXPORT void anonymize_launcher_main(Datum main_arg);

extern const char *anonymize_worker_state_name(AnonymizeWorkerState state);

/* main_arg: the slot's index; bgw_extra: the database's oid */
extern PGDLLEXPORT void anonymize_worker_main(Datum main_arg);

#endif							/* ANONYMIZE_WORKER_H */
