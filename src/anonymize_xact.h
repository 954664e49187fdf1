/*-------------------------------------------------------------------------
 *
 * anonymize_xact.h
 *	  The transaction bracket of the extension's background code: a
 *	  transaction of its own, with SPI connected and a snapshot pushed.
 *
 * The run (anonymize_run*.c) and retention (anonymize_retention.c) work
 * outside any transaction and commit in steps: each step is
 *
 *		anonymize_xact_begin();
 *		... SPI_execute...() ...
 *		anonymize_xact_commit();
 *
 * An error in between is left to the caller's PG_CATCH, which calls
 * AbortOutOfAnyTransaction() (that also closes SPI and pops the snapshot),
 * or anonymize_xact_abort_and_log() where the failure of that step is
 * only logged.
 * The scheduling worker (anonymize_worker.c) brackets its statements on
 * anonymize.worker_state with them too.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_XACT_H
#define ANONYMIZE_XACT_H

/*
 * Start a transaction (its statement timestamp now, so that now() is the
 * time of this step), connect SPI and push a fresh snapshot.  Call only
 * outside a transaction.
 */
extern void anonymize_xact_begin(void);

/* Close SPI, pop the snapshot and commit what anonymize_xact_begin() began. */
extern void anonymize_xact_commit(void);

/*
 * In a PG_CATCH: abort the step's transaction and log that <what> failed,
 * with the error's message; the caller goes on outside any transaction.
 */
extern void anonymize_xact_abort_and_log(MemoryContext cxt, const char *what);

#endif							/* ANONYMIZE_XACT_H */
