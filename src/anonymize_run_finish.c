/*-------------------------------------------------------------------------
 *
 * anonymize_run_finish.c
 *	  The end of a run's requests: once every target has been rewritten for
 *	  them, each active request gets its digests in anonymize.request_private
 *	  (what is_anonymized() and the ledger keep), a receipt of 0 rows for
 *	  every target checked that rewrote nothing, its phone and email masked
 *	  on the page, and the status Done; FINISH_CHUNK requests a transaction.
 *
 * A target registered while the run was scanning is found here, under a
 * SHARE lock on anonymize.target, before any request ends: the run scans it
 * first, then finishes (see anonymize_run_execute_ext()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "anonymize_digest.h"
#include "anonymize_ledger.h"
#include "anonymize_run_private.h"
#include "anonymize_xact.h"

#define FINISH_CHUNK 1000

/* The request ids of reqs idx[0..n), as a bigint[] datum. */
static Datum
run_finish_ids(RunState *st, const int *idx, int n)
{
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));

	for (int j = 0; j < n; j++)
		ids[j] = st->reqs[idx[j]].id;
	return PointerGetDatum(anonymize_run_int8_array(ids, n));
}

/* The keyed digest of a canonical identifier, as a bytea datum. */
static Datum
run_finish_digest(const uint8 *key, char kind, const char *canon)
{
	bytea	   *b = palloc(VARHDRSZ + ANONYMIZE_DIGEST_LEN);

	SET_VARSIZE(b, VARHDRSZ + ANONYMIZE_DIGEST_LEN);
	anonymize_digest(key, kind, canon, strlen(canon), (uint8 *) VARDATA(b));
	return PointerGetDatum(b);
}

/* A one-dimensional array of n datums, NULL where nulls[] says so. */
static Datum
run_finish_array(Datum *elems, bool *nulls, int n, Oid type, int typlen,
				 bool byval, char align)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};

	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  type, typlen, byval, align));
}

/* Store the digests of the requests' phones and emails in request_private. */
static void
run_finish_digests(RunState *st, const int *idx, int n)
{
	Datum	   *pd = palloc(sizeof(Datum) * n);
	Datum	   *ed = palloc(sizeof(Datum) * n);
	bool	   *pn = palloc(sizeof(bool) * n);
	bool	   *en = palloc(sizeof(bool) * n);
	uint8		key[ANONYMIZE_KEY_LEN];
	Datum		values[3];
	Oid			types[3] = {INT8ARRAYOID, BYTEAARRAYOID, BYTEAARRAYOID};

	anonymize_digest_key(key, true);
	for (int j = 0; j < n; j++)
	{
		AnonymizeRequest *r = &st->reqs[idx[j]];

		pn[j] = !r->has_phone;
		en[j] = r->email == NULL;
		if (r->has_phone)
			pd[j] = run_finish_digest(key, ANONYMIZE_KIND_PHONE, r->phone);
		if (r->email)
			ed[j] = run_finish_digest(key, ANONYMIZE_KIND_EMAIL, r->email);
	}
	memset(key, 0, sizeof(key));
	values[0] = run_finish_ids(st, idx, n);
	values[1] = run_finish_array(pd, pn, n, BYTEAOID, -1, false, TYPALIGN_INT);
	values[2] = run_finish_array(ed, en, n, BYTEAOID, -1, false, TYPALIGN_INT);
	anonymize_run_exec("INSERT INTO anonymize.request_private (request_id, phone_digest, email_digest)"
					   " SELECT * FROM unnest($1, $2, $3)"
					   " ON CONFLICT (request_id) DO UPDATE"
					   " SET phone_digest = EXCLUDED.phone_digest, email_digest = EXCLUDED.email_digest",
					   3, types, values, NULL, SPI_OK_INSERT);
}

/*
 * A receipt of 0 rows for every target checked for the requests.  The run
 * knows which receipts its batches committed: only requests that had
 * receipts before it (a killed run's) need the conflict check.
 */
static void
run_finish_zero_receipts(RunState *st, const int *idx, int n)
{
	for (int t = 0; t < st->ntargets; t++)
	{
		AnonymizeTarget *target = &st->targets[t];
		int64	   *tids = palloc(sizeof(int64) * n);
		int			nt = 0;
		Datum		rv[3];
		Oid			rt[3] = {INT8ARRAYOID, TEXTOID, TEXTOID};

		for (int j = 0; j < n; j++)
			if (st->reqs[idx[j]].scope[target->scope] &&
				(st->prior[idx[j]] ||
				 !(st->trows[t][idx[j] / 8] & (1 << (idx[j] % 8)))))
				tids[nt++] = st->reqs[idx[j]].id;
		if (nt == 0)
			continue;
		rv[0] = PointerGetDatum(anonymize_run_int8_array(tids, nt));
		rv[1] = CStringGetTextDatum(target->name);
		rv[2] = CStringGetTextDatum(target->col);
		anonymize_run_exec("INSERT INTO anonymize.request_log (request_id, event, target, col, rows)"
						   " SELECT r, 'rewrite', $2, $3, 0 FROM unnest($1) AS u(r)"
						   " ON CONFLICT (request_id, target, col) WHERE event = 'rewrite' DO NOTHING",
						   3, rt, rv, NULL, SPI_OK_INSERT);
		pfree(tids);
	}
}

/*
 * Mask the requests' page rows and set them Done.  rows_anonymized: the sum
 * of the request's receipts, which is the run's own count unless receipts
 * existed before it (NULL: summed).
 */
static void
run_finish_mark_done(RunState *st, const int *idx, int n)
{
	Datum	   *rows = palloc(sizeof(Datum) * n);
	bool	   *rn = palloc(sizeof(bool) * n);
	Datum		values[2];
	Oid			types[2] = {INT8ARRAYOID, INT8ARRAYOID};

	for (int j = 0; j < n; j++)
	{
		rn[j] = st->prior[idx[j]];
		rows[j] = Int64GetDatum(st->rewritten[idx[j]]);
	}
	values[0] = run_finish_ids(st, idx, n);
	values[1] = run_finish_array(rows, rn, n, INT8OID, 8, FLOAT8PASSBYVAL,
								 TYPALIGN_DOUBLE);
	anonymize_run_page_write_begin();
	/* an index probe per request, never a scan of the page */
	anonymize_run_exec("SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off;"
					   " SET LOCAL enable_mergejoin = off",
					   0, NULL, NULL, NULL, SPI_OK_UTILITY);
	anonymize_run_exec("WITH d AS ("
					   " UPDATE anonymize.anonymize_request r SET"
					   "  phone = anonymize.mask_phone(r.phone),"
					   "  email = anonymize.mask_email(anonymize.normalize_email(r.email)),"
					   "  status = 'Done', done_at = pg_catalog.now(), error = NULL,"
					   "  rows_anonymized = coalesce(u.n, (SELECT sum(l.rows) FROM anonymize.request_log l"
					   "   WHERE l.request_id = r.id AND l.event = 'rewrite'), 0)"
					   " FROM unnest($1, $2) AS u(id, n)"
					   " WHERE r.id = u.id AND r.status = 'Running'"
					   " RETURNING r.id, r.rows_anonymized)"
					   " INSERT INTO anonymize.request_log (request_id, event, status, detail)"
					   " SELECT id, 'status', 'Done', 'rows rewritten: ' || rows_anonymized FROM d",
					   2, types, values, NULL, SPI_OK_INSERT);
	st->result->requests_done += SPI_processed;
	anonymize_run_page_write_end();
}

/* The next at most FINISH_CHUNK active requests from *next on, into idx. */
static int
run_finish_next_chunk(RunState *st, int *next, int *idx)
{
	int			n = 0;

	for (; *next < st->nreqs && n < FINISH_CHUNK; (*next)++)
		if (st->reqs[*next].active && !st->reqs[*next].late)
			idx[n++] = *next;
	return n;
}

/*
 * Finish active requests: digests, zero receipts for the targets scanned
 * for them, the masked page row, Done.  Returns false, finishing nothing
 * more, when a target was added meanwhile: the caller scans it first.
 */
bool
anonymize_run_finish(RunState *st)
{
	int			next = 0;
	int		   *idx = MemoryContextAlloc(st->cxt, sizeof(int) * FINISH_CHUNK);
	int			n;

	while ((n = run_finish_next_chunk(st, &next, idx)) > 0)
	{
		anonymize_xact_begin();
		anonymize_run_activity(st, "finishing requests %s",
							   anonymize_run_request_ids(st, idx, n));

		/* a target added during the run is scanned before any request ends */
		anonymize_run_exec("LOCK TABLE anonymize.target IN SHARE MODE", 0, NULL,
						   NULL, NULL, SPI_OK_UTILITY);
		if (anonymize_run_new_targets(st) < st->ntargets)
		{
			anonymize_xact_commit();
			pfree(idx);
			return false;
		}
		run_finish_digests(st, idx, n);
		run_finish_zero_receipts(st, idx, n);
		run_finish_mark_done(st, idx, n);
		anonymize_ledger_record(st, idx, n);
		anonymize_xact_commit();

		for (int j = 0; j < n; j++)
			st->reqs[idx[j]].active = false;
	}
	pfree(idx);
	return true;
}
