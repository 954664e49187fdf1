/*-------------------------------------------------------------------------
 *
 * anonymize_citus.h
 *	  Citus tables as targets: the run and preview() count and rewrite a
 *	  Citus table with distributed statements that Citus runs on every
 *	  shard in parallel, each shard matching its rows with
 *	  anonymize._citus_match() and a match plan that holds keyed digests,
 *	  never an identifier.
 *
 * Nothing here links against Citus: it is found through its catalog
 * (pg_dist_partition) with SPI, and only when the extension citus is
 * installed in the database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_CITUS_H
#define ANONYMIZE_CITUS_H

#include "anonymize_engine.h"

/* version of the match plan's layout (anonymize_citus_plan()) */
#define ANONYMIZE_CITUS_PLAN_VERSION	1

/* time types in the plan */
#define ANONYMIZE_CITUS_TIME_DATE		0
#define ANONYMIZE_CITUS_TIME_TS			1
#define ANONYMIZE_CITUS_TIME_TSTZ		2

/* Is the extension citus installed in this database?  (In a transaction.) */
extern bool anonymize_citus_installed(void);

/*
 * Is relid a Citus table (distributed, reference, schema-sharded, Citus
 * local)?  In a transaction, SPI connected.
 */
extern bool anonymize_citus_table(Oid relid);

/*
 * Is this node a Citus worker (citus installed, not the coordinator)?  In
 * a transaction; connects SPI itself.
 */
extern bool anonymize_citus_worker_node(void);

/* run() on a Citus worker node: an error that says where to call it. */
extern void anonymize_citus_refuse_worker_node(void);

/*
 * The match plan of the active requests of reqs that target t concerns, as
 * a bytea; NULL when there are none.
 */
extern bytea *anonymize_citus_plan(AnonymizeRequest *reqs, int nreqs,
								   AnonymizeTarget *t);

/*
 * The matching expression of target t for plan parameter $n, on the table
 * aliased "t": anonymize._citus_match(value, time, $n), an integer[] of
 * request indexes or NULL.
 */
extern char *anonymize_citus_match_expr(AnonymizeTarget *t, int param);

/*
 * Count, over every shard, the rows of target t that the active requests
 * of reqs match: matched[i] += rows request i matches; *undated += rows
 * that match with a NULL time.  SPI connected, in a transaction.
 */
extern void anonymize_citus_count(AnonymizeRequest *reqs, int nreqs,
								  AnonymizeTarget *t, int64 *matched,
								  int64 *undated);

#endif							/* ANONYMIZE_CITUS_H */
