/*-------------------------------------------------------------------------
 *
 * anonymize_ledger.c
 *	  The ledger: Done requests stay in force (see anonymize_ledger.h).
 *	  The run's side (late requests, the digest probe of the rows written
 *	  since the last run, 'late' receipts, the horizon), the ledger entries
 *	  of requests as they end, anonymize.ledger_retention, and the SQL
 *	  helpers of ledger_export() and ledger_import().
 *
 * Which rows pay a digest: the run saves, at its end, the oldest
 * transaction its first snapshot could not see (pg_snapshot_xmin) as the
 * horizon, with the cluster's system identifier and the database's oid.
 * The next run checks a row only when its inserting transaction is that
 * one or later (by its raw xmin, frozen or not).  Every row is checked when there is
 * no horizon yet, after ledger_import(), in another cluster or database (a
 * restored dump carries no horizon: ledger_state is not dumped), when the
 * horizon is 2^30 transactions old or more (32-bit comparisons would no
 * longer be safe), and for a target the ledger has not checked before
 * (registered since, or failed last time).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xlog.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/backend_status.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "anonymize_bloom.h"
#include "anonymize_compat.h"
#include "anonymize_digest.h"
#include "anonymize_hmac_core.h"
#include "anonymize_ledger.h"
#include "anonymize_request.h"
#include "anonymize_run_private.h"
#include "anonymize_xact.h"

PG_FUNCTION_INFO_V1(anonymize_key_fingerprint);
PG_FUNCTION_INFO_V1(anonymize_ledger_changed);

/* what the key's fingerprint is the digest of (kind 'f': no identifier) */
#define LEDGER_FINGERPRINT_TEXT		"anonymize ledger key fingerprint"
#define LEDGER_FINGERPRINT_BYTES	16

/* a horizon this many transactions old is not trusted: every row again */
#define LEDGER_HORIZON_MAX_AGE		(INT64CONST(1) << 30)

char	   *anonymize_ledger_retention = NULL;

/* one digest of the ledger and the late request it belongs to */
typedef struct LedgerEntry
{
	uint8		digest[ANONYMIZE_DIGEST_LEN];
	int			req;			/* index into RunState.reqs */
	char		kind;			/* 'p' or 'e' */
} LedgerEntry;

/* the run's ledger, in the run's memory context */
typedef struct RunLedger
{
	bool		present;		/* the schema has the ledger (1.1) */
	bool		full;			/* check every row of every target */
	TransactionId horizon;		/* else rows from this transaction on */
	int64		next_horizon;	/* this run's, saved at its end */
	int64		imports;		/* ledger_state.imports when the run began */
	int			nchecked;
	char	  **checked;		/* targets checked by earlier runs */
	int			nentries;
	LedgerEntry *entries;
	anon_hmac_key key;
} RunLedger;

struct AnonymizeLedgerSet
{
	LedgerEntry *entries;
	uint32		mask;
	int		   *slots;			/* entry index + 1, 0 for empty */
	int		   *hits;
	AnonymizeBloom bloom;
	bool		full;
	TransactionId horizon;
	uint32		window;			/* transactions from horizon on that are due */
	const anon_hmac_key *key;
	MemoryContext reqcxt;		/* where the late requests live */
};

/* ---------------------------------------------------------------------
 * Loading the ledger into the run
 * ---------------------------------------------------------------------
 */

/* Column col of the first row of SPI's result as a bool (NULL: false). */
static bool
ledger_spi_bool(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	return !isnull && DatumGetBool(d);
}

/* Column col of row row of SPI's result as an int64, or dflt when NULL. */
static int64
ledger_spi_int8(int row, int col, int64 dflt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? dflt : DatumGetInt64(d);
}

/* "schema"."table"."col": how ledger_state names a target */
static char *
ledger_target_name(AnonymizeTarget *target)
{
	return psprintf("%s.%s", target->name, quote_identifier(target->col));
}

/* The targets ledger_state says were checked, into lg->checked. */
static void
ledger_read_checked(RunLedger *lg, MemoryContext cxt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  6, &isnull);
	Datum	   *elems;
	bool	   *nulls;
	MemoryContext old;

	if (isnull)
		return;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &lg->nchecked);
	old = MemoryContextSwitchTo(cxt);
	lg->checked = palloc(sizeof(char *) * Max(lg->nchecked, 1));
	for (int i = 0; i < lg->nchecked; i++)
		lg->checked[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	MemoryContextSwitchTo(old);
}

/* The horizon of the last run, and whether it can be trusted. */
static void
ledger_read_state(RunLedger *lg, MemoryContext cxt)
{
	int64		horizon;
	int64		xmax;
	bool		found;

	anonymize_run_exec("SELECT s.horizon::text::int8, s.system_identifier, s.database_oid,"
					   " s.full_recheck, s.imports, s.targets,"
					   " pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::int8,"
					   " pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::int8,"
					   " s.id IS NOT NULL"
					   " FROM (SELECT 1) AS d LEFT JOIN anonymize.ledger_state s ON s.id = 1",
					   0, NULL, NULL, NULL, SPI_OK_SELECT);
	found = ledger_spi_bool(0, 9);
	horizon = ledger_spi_int8(0, 1, -1);
	lg->next_horizon = ledger_spi_int8(0, 7, 0);
	xmax = ledger_spi_int8(0, 8, 0);
	lg->imports = ledger_spi_int8(0, 5, 0);
	lg->full = !found || horizon < 0 ||
		ledger_spi_int8(0, 2, 0) != (int64) GetSystemIdentifier() ||
		(Oid) ledger_spi_int8(0, 3, 0) != MyDatabaseId ||
		ledger_spi_bool(0, 4) ||
		horizon > xmax || xmax - horizon >= LEDGER_HORIZON_MAX_AGE;
	lg->horizon = (TransactionId) (uint64) Max(horizon, 0);
	if (!lg->full)
		ledger_read_checked(lg, cxt);
}

/* Room for n more requests in the run's per-request arrays. */
static void
ledger_grow_requests(RunState *st, int n)
{
	int			total = st->nreqs + n;

	st->reqs = repalloc(st->reqs, sizeof(AnonymizeRequest) * Max(total, 1));
	st->resumed = repalloc(st->resumed, sizeof(bool) * Max(total, 1));
	st->prior = repalloc(st->prior, sizeof(bool) * Max(total, 1));
	st->rewritten = repalloc(st->rewritten, sizeof(int64) * Max(total, 1));
	memset(st->reqs + st->nreqs, 0, sizeof(AnonymizeRequest) * n);
	memset(st->resumed + st->nreqs, 0, sizeof(bool) * n);
	memset(st->prior + st->nreqs, 0, sizeof(bool) * n);
	memset(st->rewritten + st->nreqs, 0, sizeof(int64) * n);
}

/* Append a late request from row i of the ledger's SPI result. */
static void
ledger_add_request(RunState *st, int i, int64 id)
{
	AnonymizeRequest *r = &st->reqs[st->nreqs++];
	bool		isnull;

	r->id = id;
	(void) anonymize_request_prepare(r, NULL, NULL,
									 DatumGetDateADT(SPI_getbinval(SPI_tuptable->vals[i],
																   SPI_tuptable->tupdesc,
																   4, &isnull)));
	r->scope[ANONYMIZE_SCOPE_ARCHIVE] = ledger_spi_bool(i, 5);
	r->scope[ANONYMIZE_SCOPE_SMS_SURVEY] = ledger_spi_bool(i, 6);
	r->scope[ANONYMIZE_SCOPE_RAW_DATA] = ledger_spi_bool(i, 7);
	r->confirmed = true;		/* it was Done: no row limit */
	r->active = true;
	r->late = true;
}

/* The ledger's entries, but those of the run's own requests, as late requests. */
static void
ledger_read_entries(RunState *st, RunLedger *lg)
{
	int64	   *ids = palloc(sizeof(int64) * Max(st->nreqs, 1));
	Datum		values[1];
	uint64		nrows;
	int			nlate = 0;
	MemoryContext old;

	for (int i = 0; i < st->nreqs; i++)
		ids[i] = st->reqs[i].id;
	values[0] = PointerGetDatum(anonymize_run_int8_array(ids, st->nreqs));
	anonymize_run_exec("SELECT l.request_id, l.kind, l.digest, l.to_date, l.archive,"
					   " l.sms_survey, l.raw_data"
					   " FROM anonymize.ledger l WHERE NOT (l.request_id = ANY ($1))"
					   " ORDER BY l.request_id, l.kind",
					   1, (Oid[]) {INT8ARRAYOID}, values, NULL, SPI_OK_SELECT);
	nrows = SPI_processed;
	for (uint64 i = 0; i < nrows; i++)
		if (i == 0 || ledger_spi_int8(i, 1, 0) != ledger_spi_int8(i - 1, 1, 0))
			nlate++;

	old = MemoryContextSwitchTo(st->cxt);
	ledger_grow_requests(st, nlate);
	lg->entries = palloc_extended(sizeof(LedgerEntry) * Max(nrows, 1), MCXT_ALLOC_HUGE);
	for (uint64 i = 0; i < nrows; i++)
	{
		int64		id = ledger_spi_int8(i, 1, 0);
		bool		isnull;
		bytea	   *digest = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc,
														   3, &isnull));
		char	   *kind = anonymize_spi_text(i, 2);
		LedgerEntry *e;

		if (i == 0 || id != ledger_spi_int8(i - 1, 1, 0))
			ledger_add_request(st, i, id);
		if (VARSIZE_ANY_EXHDR(digest) != ANONYMIZE_DIGEST_LEN)
			continue;
		e = &lg->entries[lg->nentries++];
		memcpy(e->digest, VARDATA_ANY(digest), ANONYMIZE_DIGEST_LEN);
		e->req = st->nreqs - 1;
		e->kind = strcmp(kind, "phone") == 0 ? ANONYMIZE_KIND_PHONE : ANONYMIZE_KIND_EMAIL;
	}
	MemoryContextSwitchTo(old);
	pfree(ids);
}

/* Read the ledger into the run (see anonymize_ledger.h). */
void
anonymize_ledger_load(RunState *st)
{
	RunLedger  *lg = MemoryContextAllocZero(st->cxt, sizeof(RunLedger));
	uint8		key[ANONYMIZE_KEY_LEN];
	int			first = st->nreqs;

	st->ledger = lg;
	anonymize_run_exec("SELECT pg_catalog.to_regclass('anonymize.ledger') IS NOT NULL"
					   " AND pg_catalog.to_regclass('anonymize.ledger_state') IS NOT NULL",
					   0, NULL, NULL, NULL, SPI_OK_SELECT);
	lg->present = ledger_spi_bool(0, 1);
	if (!lg->present)
		return;					/* the 1.0 schema, before ALTER EXTENSION UPDATE */
	ledger_read_state(lg, st->cxt);
	/* no key yet: no request was ever finished here, nothing to match */
	if (!anonymize_digest_key(key, false))
		return;
	anon_hmac_prepare(key, ANONYMIZE_KEY_LEN, &lg->key);
	memset(key, 0, sizeof(key));
	ledger_read_entries(st, lg);
	if (lg->nentries > 0)
		ereport(LOG,
				(errhidestmt(true),
				 errmsg("anonymize run %lld: the ledger holds %d Done requests; checking %s",
						(long long) st->run_id, st->nreqs - first,
						lg->full ? "every row once (no horizon yet, a ledger import, or a restore)" :
						"rows written since the last run, and every row of a target not checked before")));
}

/* ---------------------------------------------------------------------
 * The ledger set of a target, for the engine
 * ---------------------------------------------------------------------
 */

/* Has an earlier run checked the target against the ledger? */
static bool
ledger_target_checked(RunLedger *lg, AnonymizeTarget *target)
{
	char	   *name = ledger_target_name(target);
	bool		found = false;

	for (int i = 0; i < lg->nchecked && !found; i++)
		found = strcmp(lg->checked[i], name) == 0;
	pfree(name);
	return found;
}

/* Does the ledger entry concern a target of this kind and scope? */
static bool
ledger_entry_wanted(RunState *st, LedgerEntry *e, AnonymizeTarget *target)
{
	AnonymizeRequest *r = &st->reqs[e->req];

	if (!r->active || !r->scope[target->scope])
		return false;
	if (e->kind == ANONYMIZE_KIND_PHONE)
		return (target->kind & ANONYMIZE_KIND_PHONE_BIT) != 0;
	return (target->kind & ANONYMIZE_KIND_EMAIL_BIT) != 0;
}

/* The two hashes of a digest, for the table and the Bloom filter. */
static inline void
ledger_hashes(const uint8 *digest, uint64 *h1, uint64 *h2)
{
	memcpy(h1, digest, sizeof(uint64));
	memcpy(h2, digest + sizeof(uint64), sizeof(uint64));
	*h2 |= 1;
}

/* The ledger set of a target (see anonymize_ledger.h). */
AnonymizeLedgerSet *
anonymize_ledger_set_build(RunState *st, AnonymizeTarget *target)
{
	RunLedger  *lg = st->ledger;
	AnonymizeLedgerSet *ls;
	int			n = 0;
	uint32		nslots = 16;

	if (lg == NULL || lg->nentries == 0)
		return NULL;
	for (int i = 0; i < lg->nentries; i++)
		if (ledger_entry_wanted(st, &lg->entries[i], target))
			n++;
	if (n == 0)
		return NULL;
	while (nslots < (uint32) n * 2)
		nslots <<= 1;
	ls = palloc0(sizeof(AnonymizeLedgerSet));
	ls->entries = lg->entries;
	ls->mask = nslots - 1;
	ls->slots = palloc0_array(int, nslots);
	ls->hits = palloc_array(int, n);
	anonymize_bloom_init(&ls->bloom, n, 3);
	ls->full = lg->full || !ledger_target_checked(lg, target);
	ls->horizon = lg->horizon;
	ls->window = (uint32) (ReadNextTransactionId() - lg->horizon);
	ls->key = &lg->key;
	ls->reqcxt = st->cxt;
	for (int i = 0; i < lg->nentries; i++)
	{
		uint64		h1,
					h2;
		uint32		s;

		if (!ledger_entry_wanted(st, &lg->entries[i], target))
			continue;
		ledger_hashes(lg->entries[i].digest, &h1, &h2);
		anonymize_bloom_add(&ls->bloom, h1, h2);
		for (s = h1 & ls->mask; ls->slots[s] != 0; s = (s + 1) & ls->mask)
			;
		ls->slots[s] = i + 1;
	}
	return ls;
}

/* a ledger set flattened for a parallel scan's workers: entries, slots after */
typedef struct LedgerSetFlat
{
	bool		full;
	TransactionId horizon;
	uint32		window;
	uint32		mask;
	int			n;				/* entries */
	anon_hmac_key key;
} LedgerSetFlat;

/* The bytes of a target's ledger set flattened. */
Size
anonymize_ledger_set_flat_size(AnonymizeLedgerSet *ls)
{
	return MAXALIGN(sizeof(LedgerSetFlat)) +
		MAXALIGN(sizeof(LedgerEntry) * (ls->mask + 1)) +
		sizeof(int) * (ls->mask + 1);
}

/* Flatten a target's ledger set into dst: its own entries, renumbered. */
void
anonymize_ledger_set_flatten(AnonymizeLedgerSet *ls, void *dst)
{
	LedgerSetFlat *flat = (LedgerSetFlat *) dst;
	LedgerEntry *entries = (LedgerEntry *) ((char *) dst + MAXALIGN(sizeof(LedgerSetFlat)));
	int		   *slots = (int *) ((char *) entries +
								 MAXALIGN(sizeof(LedgerEntry) * (ls->mask + 1)));

	flat->full = ls->full;
	flat->horizon = ls->horizon;
	flat->window = ls->window;
	flat->mask = ls->mask;
	flat->key = *ls->key;
	flat->n = 0;
	for (uint32 s = 0; s <= ls->mask; s++)
	{
		slots[s] = 0;
		if (ls->slots[s] == 0)
			continue;
		entries[flat->n++] = ls->entries[ls->slots[s] - 1];
		slots[s] = flat->n;
	}
}

/*
 * A worker's ledger set from a flattened one (which stays mapped while it
 * is used); a late request's canonical form goes in the current context.
 */
AnonymizeLedgerSet *
anonymize_ledger_set_unflatten(void *src)
{
	LedgerSetFlat *flat = (LedgerSetFlat *) src;
	AnonymizeLedgerSet *ls = palloc0(sizeof(AnonymizeLedgerSet));

	ls->entries = (LedgerEntry *) ((char *) src + MAXALIGN(sizeof(LedgerSetFlat)));
	ls->slots = (int *) ((char *) ls->entries +
						 MAXALIGN(sizeof(LedgerEntry) * (flat->mask + 1)));
	ls->full = flat->full;
	ls->horizon = flat->horizon;
	ls->window = flat->window;
	ls->mask = flat->mask;
	ls->key = &flat->key;
	ls->reqcxt = CurrentMemoryContext;
	ls->hits = palloc_array(int, Max(flat->n, 1));
	anonymize_bloom_init(&ls->bloom, flat->n, 3);
	for (int i = 0; i < flat->n; i++)
	{
		uint64		h1,
					h2;

		ledger_hashes(ls->entries[i].digest, &h1, &h2);
		anonymize_bloom_add(&ls->bloom, h1, h2);
	}
	/* its slots are the segment's: not freed with the set */
	ls->slots = memcpy(palloc_array(int, flat->mask + 1), ls->slots,
					   sizeof(int) * (flat->mask + 1));
	return ls;
}

/* Free a target's ledger set. */
void
anonymize_ledger_set_free(AnonymizeLedgerSet *ls)
{
	pfree(ls->slots);
	pfree(ls->hits);
	anonymize_bloom_free(&ls->bloom);
	pfree(ls);
}

/*
 * Was the row written since the horizon, by a transaction from the
 * horizon to the latest one when the set was built?  The raw xmin says,
 * frozen or not (freezing keeps it since PostgreSQL 9.4): a row frozen
 * between two runs is still checked.  A frozen xmin from before the last
 * wraparound may fall in that window by chance: one digest more, never one
 * less.  A row written after the set was built has an xmin past the
 * window: the next run checks it, its horizon being this run's.  A table
 * that is not heap has no xmin to read: every row.
 */
bool
anonymize_ledger_row_due(AnonymizeLedgerSet *ls, TupleTableSlot *slot)
{
	HeapTuple	tuple;
	TransactionId xmin;

	if (ls->full || !TTS_IS_BUFFERTUPLE(slot))
		return true;
	tuple = ((BufferHeapTupleTableSlot *) slot)->base.tuple;
	if (tuple == NULL || tuple->t_data == NULL)
		return true;
	xmin = HeapTupleHeaderGetRawXmin(tuple->t_data);
	if (!TransactionIdIsNormal(xmin))
		return false;			/* bootstrap, or frozen before 9.4: old */
	return (uint32) (xmin - ls->horizon) < ls->window;
}

/* The late requests whose digest is key's (see anonymize_ledger.h). */
int
anonymize_ledger_probe(AnonymizeLedgerSet *ls, const char *key, int keylen,
					   const int **reqs)
{
	uint8		digest[ANONYMIZE_DIGEST_LEN];
	uint64		h1,
				h2;
	int			n = 0;

	if (anon_hmac(ls->key, key[0], key + 1, keylen - 1, digest) != 0)
		return 0;
	ledger_hashes(digest, &h1, &h2);
	if (!anonymize_bloom_may_contain(&ls->bloom, h1, h2))
		return 0;
	for (uint32 s = h1 & ls->mask; ls->slots[s] != 0; s = (s + 1) & ls->mask)
	{
		LedgerEntry *e = &ls->entries[ls->slots[s] - 1];

		if (memcmp(e->digest, digest, ANONYMIZE_DIGEST_LEN) == 0)
			ls->hits[n++] = e->req;
	}
	*reqs = ls->hits;
	return n;
}

/*
 * A row matched late request r: its canonical form is now known (in the
 * run's memory only, as any request's), for the rewrite's recheck.
 */
void
anonymize_ledger_fill(AnonymizeLedgerSet *ls, AnonymizeRequest *r,
					  const char *key, int keylen)
{
	if (key[0] == ANONYMIZE_KIND_PHONE_CHAR)
	{
		if (!r->has_phone && keylen - 1 < ANON_PHONE_CANON_SIZE)
		{
			memcpy(r->phone, key + 1, keylen - 1);
			r->phone[keylen - 1] = '\0';
			r->has_phone = true;
		}
	}
	else if (r->email == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(ls->reqcxt);

		r->email = pnstrdup(key + 1, keylen - 1);
		MemoryContextSwitchTo(old);
	}
}

/* ---------------------------------------------------------------------
 * Receipts, new entries, the horizon
 * ---------------------------------------------------------------------
 */

/*
 * The batch's rows of late requests as receipts: event 'late', one row
 * per request, target and run (detail {"run": N}, and the rows per table
 * for a target of several tables).
 */
void
anonymize_ledger_receipts(RunState *st, AnonymizeTarget *target, Oid leaf,
						  const int *ids, int nids, const int64 *rcount)
{
	int64	   *rid = palloc(sizeof(int64) * Max(nids, 1));
	int64	   *rn = palloc(sizeof(int64) * Max(nids, 1));
	int			n = 0;
	Oid			types[6] = {INT8ARRAYOID, INT8ARRAYOID, TEXTOID, TEXTOID, TEXTOID, INT8OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	for (int i = 0; i < nids; i++)
		if (st->reqs[ids[i]].late && rcount[i] > 0)
		{
			rid[n] = st->reqs[ids[i]].id;
			rn[n++] = rcount[i];
		}
	if (n == 0)
		return;
	values[0] = PointerGetDatum(anonymize_run_int8_array(rid, n));
	values[1] = PointerGetDatum(anonymize_run_int8_array(rn, n));
	values[2] = CStringGetTextDatum(target->name);
	values[3] = CStringGetTextDatum(target->col);
	anonymize_run_leaf_detail(target, leaf, &values[4], &nulls[4]);
	values[5] = Int64GetDatum(st->run_id);
	/*
	 * One batch at a time per late request, so that its receipt stays one
	 * row per run when the run's workers rewrite batches at once: its
	 * ledger entries locked, in order (a lock group's members wait for
	 * each other's row locks too, by polling).
	 */
	anonymize_run_exec("SELECT FROM anonymize.ledger WHERE request_id = ANY($1)"
					   " ORDER BY request_id, kind FOR NO KEY UPDATE",
					   1, types, values, NULL, SPI_OK_SELECT);
	anonymize_run_exec("WITH u AS (SELECT * FROM unnest($1, $2) AS u(r, n)),"
					   " upd AS ("
					   "  UPDATE anonymize.request_log l SET rows = l.rows + u.n,"
					   "   detail = CASE WHEN $5 IS NULL THEN l.detail ELSE"
					   "    pg_catalog.jsonb_set(l.detail::jsonb, ARRAY['tables', $5],"
					   "     pg_catalog.to_jsonb(coalesce((l.detail::jsonb #>> ARRAY['tables', $5])::bigint, 0) + u.n))::text END,"
					   "   updated_at = pg_catalog.clock_timestamp()"
					   "  FROM u WHERE l.request_id = u.r AND l.event = 'late' AND l.target = $3 AND l.col = $4"
					   "   AND CASE WHEN l.event = 'late' THEN (l.detail::jsonb ->> 'run')::bigint END = $6"
					   "  RETURNING l.request_id)"
					   " INSERT INTO anonymize.request_log (request_id, event, target, col, rows, detail)"
					   " SELECT u.r, 'late', $3, $4, u.n,"
					   "  (pg_catalog.jsonb_build_object('run', $6) || CASE WHEN $5 IS NULL THEN '{}'::jsonb"
					   "   ELSE pg_catalog.jsonb_build_object('tables', pg_catalog.jsonb_build_object($5, u.n)) END)::text"
					   " FROM u WHERE u.r NOT IN (SELECT request_id FROM upd)",
					   6, types, values, nulls, SPI_OK_INSERT);
	pfree(rid);
	pfree(rn);
}

/* The ledger entries of the requests just set Done (reqs idx[0..n)). */
void
anonymize_ledger_record(RunState *st, const int *idx, int n)
{
	int64	   *ids;
	Datum		values[1];

	if (st->ledger == NULL || !st->ledger->present)
		return;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (int j = 0; j < n; j++)
		ids[j] = st->reqs[idx[j]].id;
	values[0] = PointerGetDatum(anonymize_run_int8_array(ids, n));
	anonymize_run_exec("INSERT INTO anonymize.ledger (request_id, kind, digest, to_date, archive,"
					   " sms_survey, raw_data, done_at, source)"
					   " SELECT r.id, k.kind, k.digest, r.to_date, r.archive, r.sms_survey, r.raw_data,"
					   "  r.done_at, 'run'"
					   " FROM anonymize.anonymize_request r"
					   " JOIN anonymize.request_private p ON p.request_id = r.id"
					   " CROSS JOIN LATERAL (VALUES ('phone', p.phone_digest), ('email', p.email_digest))"
					   "  AS k(kind, digest)"
					   " WHERE r.id = ANY ($1) AND r.status = 'Done' AND k.digest IS NOT NULL"
					   " ON CONFLICT (request_id, kind) DO NOTHING",
					   1, (Oid[]) {INT8ARRAYOID}, values, NULL, SPI_OK_INSERT);
	pfree(ids);
}

/* Did the run fail the target of that name (ledger_target_name())? */
static bool
ledger_target_failed(RunState *st, const char *name)
{
	for (int t = 0; t < st->ntargets; t++)
		if (st->tfailed[t] != NULL &&
			strcmp(ledger_target_name(&st->targets[t]), name) == 0)
			return true;
	return false;
}

/*
 * The targets checked now: those checked before and those this run
 * scanned, but one that failed (its late rows may be left): the next run
 * checks it again in full.
 */
static Datum
ledger_checked_array(RunState *st)
{
	RunLedger  *lg = st->ledger;
	Datum	   *elems = palloc(sizeof(Datum) * (lg->nchecked + st->ntargets + 1));
	int			n = 0;

	for (int i = 0; i < lg->nchecked; i++)
		if (!ledger_target_failed(st, lg->checked[i]))
			elems[n++] = CStringGetTextDatum(lg->checked[i]);
	for (int t = 0; t < st->ntargets; t++)
		if (st->tfailed[t] == NULL)
			elems[n++] = CStringGetTextDatum(ledger_target_name(&st->targets[t]));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* The horizon of this run, for the next one (see anonymize_ledger.h). */
void
anonymize_ledger_save(RunState *st)
{
	Oid			types[5] = {INT8OID, INT8OID, OIDOID, INT8OID, TEXTARRAYOID};
	Datum		values[5];

	if (st->ledger == NULL || !st->ledger->present)
		return;
	anonymize_xact_begin();
	values[0] = Int64GetDatum(st->ledger->next_horizon);
	values[1] = Int64GetDatum((int64) GetSystemIdentifier());
	values[2] = ObjectIdGetDatum(MyDatabaseId);
	values[3] = Int64GetDatum(st->ledger->imports);
	values[4] = ledger_checked_array(st);
	/* an import during the run: the next run checks every row again */
	anonymize_run_exec("INSERT INTO anonymize.ledger_state AS s"
					   " (id, horizon, system_identifier, database_oid, full_recheck, imports, targets)"
					   " VALUES (1, $1::text::xid8, $2, $3, false, $4,"
					   "  ARRAY(SELECT DISTINCT unnest($5) ORDER BY 1))"
					   " ON CONFLICT (id) DO UPDATE SET horizon = EXCLUDED.horizon,"
					   "  system_identifier = EXCLUDED.system_identifier,"
					   "  database_oid = EXCLUDED.database_oid,"
					   "  full_recheck = s.imports <> $4, targets = EXCLUDED.targets,"
					   "  updated_at = pg_catalog.now()",
					   5, types, values, NULL, SPI_OK_INSERT);
	anonymize_xact_commit();
}

/* ---------------------------------------------------------------------
 * Retention
 * ---------------------------------------------------------------------
 */

/*
 * Entries of requests no longer on the page, Done longer ago than
 * anonymize.ledger_retention, and their late receipts; counted in
 * retention_log.  Returns the requests purged.
 */
static int64
ledger_purge(void)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(anonymize_ledger_retention)};
	bool		isnull;

	anonymize_run_exec("WITH gone AS ("
					   "  DELETE FROM anonymize.ledger l"
					   "  WHERE l.done_at < pg_catalog.now() - $1::interval"
					   "   AND NOT EXISTS (SELECT FROM anonymize.anonymize_request r WHERE r.id = l.request_id)"
					   "  RETURNING l.request_id"
					   "), receipts AS ("
					   "  DELETE FROM anonymize.request_log g"
					   "  WHERE g.request_id IN (SELECT request_id FROM gone)"
					   "   AND NOT EXISTS (SELECT FROM anonymize.anonymize_request r WHERE r.id = g.request_id)"
					   "  RETURNING 1"
					   "), n AS (SELECT count(DISTINCT request_id) AS requests FROM gone"
					   "), logged AS ("
					   "  INSERT INTO anonymize.retention_log (kind, cutoff, rows, detail)"
					   "  SELECT 'ledger', pg_catalog.now() - $1::interval, n.requests,"
					   "   n.requests || ' requests'' digests, ' || (SELECT count(*) FROM receipts) || ' receipts'"
					   "  FROM n WHERE n.requests > 0 RETURNING 1"
					   ")"
					   " SELECT n.requests, (SELECT count(*) FROM logged) FROM n",
					   1, types, values, NULL, SPI_OK_SELECT);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/* Invalidate the page, so that every search cache reads the ledger again. */
static void
ledger_invalidate(void)
{
	Oid			nsp,
				page,
				private;

	anonymize_request_relids(&nsp, &page, &private);
	if (OidIsValid(page))
		CacheInvalidateRelcacheByRelid(page);
}

/* anonymize.ledger_retention, in a transaction of its own; errors logged. */
void
anonymize_ledger_retention_run(MemoryContext cxt)
{
	if (anonymize_ledger_retention == NULL || anonymize_ledger_retention[0] == '\0')
		return;
	pgstat_report_activity(STATE_RUNNING, "anonymize run: retention: the ledger");
	PG_TRY();
	{
		int64		purged = 0;

		anonymize_xact_begin();
		anonymize_run_exec("SELECT pg_catalog.to_regclass('anonymize.ledger') IS NOT NULL",
						   0, NULL, NULL, NULL, SPI_OK_SELECT);
		if (ledger_spi_bool(0, 1))
			purged = ledger_purge();
		if (purged > 0)
		{
			ledger_invalidate();
			ereport(LOG,
					(errhidestmt(true),
					 errmsg("anonymize: purged the ledger entries of %lld requests done more than %s ago",
							(long long) purged, anonymize_ledger_retention)));
		}
		anonymize_xact_commit();
	}
	PG_CATCH();
	{
		anonymize_xact_abort_and_log(cxt, "retention of the ledger");
	}
	PG_END_TRY();
}

/* ---------------------------------------------------------------------
 * SQL helpers of ledger_export() and ledger_import()
 * ---------------------------------------------------------------------
 */

/*
 * anonymize._key_fingerprint() returns text
 *
 * The first 16 bytes, in hex, of HMAC-SHA256(key, 'f:' and a fixed text):
 * the same for two databases with the same key, and no use for finding
 * the key or matching an identifier.  NULL when there is no key yet.
 */
Datum
anonymize_key_fingerprint(PG_FUNCTION_ARGS)
{
	static const char hexdigits[] = "0123456789abcdef";
	uint8		key[ANONYMIZE_KEY_LEN];
	uint8		digest[ANONYMIZE_DIGEST_LEN];
	char		hex[LEDGER_FINGERPRINT_BYTES * 2 + 1];

	if (!anonymize_digest_key(key, false))
		PG_RETURN_NULL();
	anonymize_digest(key, 'f', LEDGER_FINGERPRINT_TEXT,
					 strlen(LEDGER_FINGERPRINT_TEXT), digest);
	memset(key, 0, sizeof(key));
	for (int i = 0; i < LEDGER_FINGERPRINT_BYTES; i++)
	{
		hex[2 * i] = hexdigits[digest[i] >> 4];
		hex[2 * i + 1] = hexdigits[digest[i] & 0x0f];
	}
	hex[LEDGER_FINGERPRINT_BYTES * 2] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(hex));
}

/*
 * anonymize._ledger_changed() returns void
 *
 * After ledger_import(): every session's search cache reads the ledger
 * again at its next statement (it watches the page's invalidations).
 */
Datum
anonymize_ledger_changed(PG_FUNCTION_ARGS)
{
	ledger_invalidate();
	PG_RETURN_VOID();
}
