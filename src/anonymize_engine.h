/*-------------------------------------------------------------------------
 *
 * anonymize_engine.h
 *	  Matching archive rows against due requests: the set of requests'
 *	  canonical identifiers in a hash table, the cut-off in time, and one
 *	  sequential scan of a target's table that reports every matching row.
 *
 * Used by the run (anonymize_run.c) and by preview() (anonymize_preview.c),
 * so that a preview counts exactly the rows the run rewrites.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_ENGINE_H
#define ANONYMIZE_ENGINE_H

#include "access/attnum.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "datatype/timestamp.h"
#include "executor/tuptable.h"
#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "utils/date.h"
#include "utils/relcache.h"

#include "anonymize_core.h"

/* scopes, as ticked on the page */
#define ANONYMIZE_SCOPE_ARCHIVE		0
#define ANONYMIZE_SCOPE_SMS_SURVEY	1
#define ANONYMIZE_SCOPE_RAW_DATA	2
#define ANONYMIZE_NSCOPES			3

/* kinds of target columns (bit flags) */
#define ANONYMIZE_KIND_PHONE_BIT	0x01
#define ANONYMIZE_KIND_EMAIL_BIT	0x02

/* first byte of a hash key: which canonical form follows */
#define ANONYMIZE_KIND_PHONE_CHAR	'p'
#define ANONYMIZE_KIND_EMAIL_CHAR	'e'

/* values longer than this are never a phone number or an email */
#define ANONYMIZE_MAX_VALUE_LEN		1024

/* One request as the engine sees it. */
typedef struct AnonymizeRequest
{
	int64		id;
	bool		has_phone;
	char		phone[ANON_PHONE_CANON_SIZE];	/* canonical, when has_phone */
	char	   *email;			/* canonical, or NULL */
	DateADT		to_date;
	TimestampTz end_tstz;		/* timestamptz before this: on or before to_date */
	Timestamp	end_ts;			/* timestamp before this: on or before to_date */
	bool		scope[ANONYMIZE_NSCOPES];
	bool		confirmed;		/* Held and confirmed: no row limit */
	bool		active;			/* false once Held or Failed in this run */
	bool		late;			/* a Done request of the ledger (anonymize_ledger.h) */
	int64		matched;		/* rows matched in the counting pass */
} AnonymizeRequest;

/* A hash table of canonical identifiers -> the requests that name them. */
typedef struct AnonymizeMatchSet AnonymizeMatchSet;

/* One registered target, with the leaf tables to scan. */
typedef struct AnonymizeTarget
{
	Oid			relid;			/* the registered (maybe partitioned) table */
	char	   *name;			/* "schema"."table", quoted, for receipts */
	char	   *col;
	char	   *time_col;
	int			kind;			/* ANONYMIZE_KIND_*_BIT */
	int			scope;			/* ANONYMIZE_SCOPE_* */
	Oid			time_type;		/* DATEOID, TIMESTAMPOID or TIMESTAMPTZOID */
	Oid			col_type;		/* the identifier column's (base) type */
	bool		erase_null;		/* erase 'null': matches are set to NULL */
	char	   *replacement;	/* erase 'replace': NULL for the setting */
} AnonymizeTarget;

/*
 * The registered targets: oid, quoted name, col, kind, scope, time_col,
 * type of time_col, type of col, erase, replacement; in a stable order.
 * Read with anonymize_target_fill().  Erase and replacement are read
 * through to_jsonb(), so that the module also runs on the 1.0 schema,
 * before ALTER EXTENSION anonymize UPDATE.
 */
#define ANONYMIZE_TARGETS_SQL \
	"SELECT t.tbl::oid, format('%I.%I', n.nspname, c.relname), t.col::text," \
	" t.kind, t.scope, t.time_col::text, a.atttypid, ia.atttypid," \
	" coalesce(pg_catalog.to_jsonb(t) ->> 'erase', 'replace')," \
	" pg_catalog.to_jsonb(t) ->> 'replacement'" \
	" FROM anonymize.target t" \
	" JOIN pg_catalog.pg_class c ON c.oid = t.tbl" \
	" JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" \
	" JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tbl" \
	"  AND a.attname = t.time_col AND NOT a.attisdropped" \
	" JOIN pg_catalog.pg_attribute ia ON ia.attrelid = t.tbl" \
	"  AND ia.attname = t.col AND NOT ia.attisdropped" \
	" ORDER BY 2, 3"

/* Fill a target from row row of ANONYMIZE_TARGETS_SQL's SPI result. */
extern void anonymize_target_fill(AnonymizeTarget *t, int row);

/* Is the identifier column a number (digits of an international number)? */
extern bool anonymize_target_numeric(AnonymizeTarget *t);

/* "archive", "sms_survey", "raw_data" -> ANONYMIZE_SCOPE_*; kinds -> bits */
extern int	anonymize_scope_number(const char *scope);
extern int	anonymize_kind_bits(const char *kind);

/* column col of row row of SPI_tuptable as a palloc'd C string, or NULL */
extern char *anonymize_spi_text(int row, int col);

/*
 * Called for every matching row with the indexes (into the request array)
 * of the active requests it matches, lowest id first.
 */
typedef void (*anonymize_match_callback) (void *arg, Oid leaf,
										  ItemPointer tid,
										  const int *reqs, int nreqs);

/* Fill the request's canonical forms and cut-offs; false if invalid. */
extern bool anonymize_request_prepare(AnonymizeRequest *req,
									  const char *phone, const char *email,
									  DateADT to_date);

/* The requests (active, with the scope ticked) that a target concerns. */
extern AnonymizeMatchSet *anonymize_matchset_build(AnonymizeRequest *reqs,
												   int nreqs, int kind,
												   int scope);
extern int	anonymize_matchset_size(AnonymizeMatchSet *ms);
/* rows reported so far whose time is NULL (they match every request) */
extern int64 anonymize_matchset_undated(AnonymizeMatchSet *ms);
extern void anonymize_matchset_free(AnonymizeMatchSet *ms);

/*
 * The ledger's digests for the target scanned with ms (anonymize_ledger.h),
 * or NULL; freed with the match set.  A match set with one checks the
 * rows the ledger says are due against it, even with no key of its own.
 */
struct AnonymizeLedgerSet;
extern void anonymize_matchset_set_ledger(AnonymizeMatchSet *ms,
										  struct AnonymizeLedgerSet *ls);
extern bool anonymize_matchset_empty(AnonymizeMatchSet *ms);

/*
 * Tables of a target that hold rows, as OIDs: itself, its leaf partitions,
 * or an inheritance parent and all its children.
 */
extern List *anonymize_target_leaves(Oid relid);

/* False when a leaf partition lies wholly after every request's to_date. */
extern bool anonymize_leaf_may_match(AnonymizeMatchSet *ms,
									 AnonymizeTarget *target, Relation leaf);

/*
 * Report each matching row of one leaf table of a target, under the active
 * snapshot: by a sequential scan, or by lookups in the leaf's index over
 * canonical_phone() (anonymize_engine_probe.c), in no particular order
 * then.  The leaf must be opened (AccessShareLock at least) by the caller.
 * Returns the number of rows read.
 */
extern int64 anonymize_engine_scan(AnonymizeMatchSet *ms,
								   AnonymizeTarget *target, Relation leaf,
								   anonymize_match_callback callback,
								   void *arg);

/*
 * The two ways of anonymize_engine_scan(), for a caller that picks one: by
 * lookups of the match set's phone keys in index (from
 * anonymize_probe_index_open()), or by a sequential scan.
 */
extern int64 anonymize_engine_lookup(AnonymizeMatchSet *ms,
									 AnonymizeTarget *target, Relation leaf,
									 Relation index,
									 anonymize_match_callback callback,
									 void *arg);
extern int64 anonymize_engine_seqscan(AnonymizeMatchSet *ms,
									  AnonymizeTarget *target, Relation leaf,
									  anonymize_match_callback callback,
									  void *arg);

/*
 * anonymize_engine_probe.c: the index of a leaf the engine may look up
 * instead of scanning (opened, AccessShareLock), or NULL; its equality
 * function; the scan key of one lookup.
 */
extern Relation anonymize_probe_index_open(AnonymizeMatchSet *ms,
										   AnonymizeTarget *target,
										   Relation leaf);
extern RegProcedure anonymize_probe_eq_proc(Relation index);
extern void anonymize_probe_key(ScanKey skey, Relation index,
								RegProcedure eqproc, const char *canon,
								int len);

/*
 * The same over a scan the caller began (a parallel scan's share of the
 * blocks) and ends; poll(pollarg), when not NULL, is called every few
 * hundred rows.  Returns the number of rows scanned.
 */
extern int64 anonymize_engine_scan_rows(AnonymizeMatchSet *ms,
										AnonymizeTarget *target,
										Relation leaf, TableScanDesc scan,
										anonymize_match_callback callback,
										void *arg, void (*poll) (void *),
										void *pollarg);

/*
 * A parallel scan: the match set's keys flattened into shared memory (its
 * size, its copy) and rebuilt from there over a copy of the requests.
 */
extern Size anonymize_matchset_flat_size(AnonymizeMatchSet *ms);
extern void anonymize_matchset_flatten(AnonymizeMatchSet *ms, void *dst);
extern AnonymizeMatchSet *anonymize_matchset_unflatten(const void *src,
													   AnonymizeRequest *reqs,
													   int nreqs);

/* the match set's ledger set, or NULL */
extern struct AnonymizeLedgerSet *anonymize_matchset_ledger(AnonymizeMatchSet *ms);

/* in the callback: the canonical key of the row reported */
extern const char *anonymize_matchset_row_key(AnonymizeMatchSet *ms,
											  int *keylen);

/* a row of key matched reqs elsewhere: the late ones learn their form */
extern void anonymize_matchset_fill_late(AnonymizeMatchSet *ms,
										 const int *reqs, int n,
										 const char *key, int keylen);

/*
 * During a run, the requests being rewritten, for the recheck the rewrite
 * statement makes (anonymize._rewrite_recheck()).
 */
extern void anonymize_engine_set_recheck(AnonymizeRequest *reqs, int nreqs);

/* whether a fetched row still holds an identifier of request r */
extern bool anonymize_engine_recheck_row(AnonymizeTarget *target,
										 TupleTableSlot *slot,
										 AttrNumber idatt,
										 const AnonymizeRequest *r);

#endif							/* ANONYMIZE_ENGINE_H */
