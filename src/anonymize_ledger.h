/*-------------------------------------------------------------------------
 *
 * anonymize_ledger.h
 *	  The ledger: a Done request stays in force.  Every run also erases the
 *	  rows of its scopes whose identifier's keyed digest is a Done request's
 *	  and whose time is on or before its to_date (late rows, restored
 *	  backups), as receipts of event 'late'.  Only rows written since the
 *	  last run (by their inserting transaction) pay the digest, unless a
 *	  ledger import, a restore or a new target asks for every row once.
 *
 * The run appends one "late" request per Done request of the ledger to
 * its request array (anonymize_ledger_load()); the engine asks the set of
 * a target (AnonymizeLedgerSet) about the rows it scans, and fills the
 * late request's canonical form from the first row that matches, so that
 * the rewrite's recheck and receipts work as for any request.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_LEDGER_H
#define ANONYMIZE_LEDGER_H

#include "executor/tuptable.h"

#include "anonymize_engine.h"

struct RunState;

/* The digests of the ledger's requests of one scope and kind of target. */
typedef struct AnonymizeLedgerSet AnonymizeLedgerSet;

/* anonymize.ledger_retention: empty keeps the ledger forever */
extern char *anonymize_ledger_retention;

/*
 * In run_load_requests()'s transaction: read the ledger and its horizon,
 * and append a late request per Done request of the ledger to st->reqs.
 */
extern void anonymize_ledger_load(struct RunState *st);

/* The ledger set of a target, or NULL when the ledger has nothing for it. */
extern AnonymizeLedgerSet *anonymize_ledger_set_build(struct RunState *st,
													  AnonymizeTarget *target);
extern void anonymize_ledger_set_free(AnonymizeLedgerSet *ls);

/*
 * A parallel scan: a target's ledger set flattened into shared memory
 * (its size, its copy) and rebuilt from there in a worker.
 */
extern Size anonymize_ledger_set_flat_size(AnonymizeLedgerSet *ls);
extern void anonymize_ledger_set_flatten(AnonymizeLedgerSet *ls, void *dst);
extern AnonymizeLedgerSet *anonymize_ledger_set_unflatten(void *src);

/* Engine: must this row be checked (written since the horizon, or all)? */
extern bool anonymize_ledger_row_due(AnonymizeLedgerSet *ls,
									 TupleTableSlot *slot);

/*
 * Engine: the late requests whose digest is that of key (kind char and
 * canonical form, keylen bytes); returns how many, their indexes in *reqs.
 */
extern int	anonymize_ledger_probe(AnonymizeLedgerSet *ls, const char *key,
								   int keylen, const int **reqs);

/* Engine: a row matched late request r: remember its canonical form. */
extern void anonymize_ledger_fill(AnonymizeLedgerSet *ls, AnonymizeRequest *r,
								  const char *key, int keylen);

/* Rewrite batch: the receipts (event 'late') of the late requests. */
extern void anonymize_ledger_receipts(struct RunState *st,
									  AnonymizeTarget *target, Oid leaf,
									  const int *ids, int nids,
									  const int64 *rcount);

/* Finish: the ledger entries of requests just Done (ids). */
extern void anonymize_ledger_record(struct RunState *st, const int *idx, int n);

/* End of a successful run: the new horizon, targets checked. */
extern void anonymize_ledger_save(struct RunState *st);

/* Retention: purge entries older than anonymize.ledger_retention. */
extern void anonymize_ledger_retention_run(MemoryContext cxt);

#endif							/* ANONYMIZE_LEDGER_H */
