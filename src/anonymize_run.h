/*-------------------------------------------------------------------------
 *
 * anonymize_run.h
 *	  The erasure run: what run() and the background worker call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_RUN_H
#define ANONYMIZE_RUN_H

typedef struct AnonymizeRunResult
{
	int64		requests_done;
	int64		requests_held;
	int64		requests_failed;
	int64		rows_rewritten;
} AnonymizeRunResult;

/*
 * Process every due request.  Call it in a background worker connected to
 * the database (as the bootstrap superuser), outside any transaction: it
 * starts and commits its own transactions, takes the run lock (a second
 * run waits, then finds nothing due), reports progress with
 * pgstat_report_activity(), records itself in anonymize.run_log and
 * vacuums what it touched.  trigger says who asked ("run()", "schedule",
 * "wake()"), for run_log.  On error the run is recorded as failed, the
 * run lock released, and the error (without detail, which could quote a
 * row) re-thrown; its requests stay Running and the next run finishes them.
 */
extern void anonymize_run_execute(AnonymizeRunResult *result,
								  const char *trigger);

/*
 * The same, calling committed(arg, result) once the run has committed and
 * before it vacuums: run() uses it to answer its caller, then waits for the
 * caller's transaction to end, since that transaction's snapshot would keep
 * the old row versions from being vacuumed away.
 */
typedef void (*anonymize_run_committed_hook) (void *arg,
											  const AnonymizeRunResult *result);

extern void anonymize_run_execute_ext(AnonymizeRunResult *result,
									  const char *trigger,
									  anonymize_run_committed_hook committed,
									  void *arg);

/* the run lock: pg_advisory_lock(ANONYMIZE_RUN_LOCK_KEY1, ANONYMIZE_RUN_LOCK_KEY2) */
#define ANONYMIZE_RUN_LOCK_KEY1		1634627438	/* 'anon' */
#define ANONYMIZE_RUN_LOCK_KEY2		1920298496	/* 'run\0' */

#endif							/* ANONYMIZE_RUN_H */
