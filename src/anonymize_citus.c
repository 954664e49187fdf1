/*-------------------------------------------------------------------------
 *
 * anonymize_citus.c
 *	  Citus tables as targets, on the coordinator: whether a table or this
 *	  node is Citus's, the match plan that the shards match their rows
 *	  with, and the distributed count that the run's Held guard and
 *	  preview() use.
 *
 * The plan carries, for each active request that a target concerns, the
 * HMAC-SHA256 of its canonical phone or email under a key made for this
 * plan alone (random, 32 bytes, never the key of anonymize.secret), the
 * request's index and its cut-off in the target's time type; and the
 * settings that the canonical forms depend on, so that every shard
 * canonicalizes as the coordinator does.  No identifier is in it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "anonymize_citus.h"
#include "anonymize_compat.h"
#include "anonymize_core.h"
#include "anonymize_digest.h"
#include "anonymize_hmac_core.h"
#include "anonymize_settings.h"

/* one key of the plan, before it is sorted */
typedef struct CitusEntry
{
	uint8		digest[ANON_SHA256_LEN];
	int32		req;
	int64		cutoff;
} CitusEntry;

/* Is the extension citus installed in this database? */
bool
anonymize_citus_installed(void)
{
	return OidIsValid(get_extension_oid("citus", true));
}

/* Is relid a table in Citus's metadata? */
bool
anonymize_citus_table(Oid relid)
{
	bool		isnull;

	if (!anonymize_citus_installed())
		return false;
	if (SPI_execute_with_args("SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition"
							  " WHERE logicalrelid = $1)",
							  1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(relid)},
							  NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_partition");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
}

/* Is this node a Citus worker, not the coordinator? */
bool
anonymize_citus_worker_node(void)
{
	bool		isnull;
	bool		worker;

	if (!anonymize_citus_installed())
		return false;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute("SELECT NOT pg_catalog.citus_is_coordinator()", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not ask Citus whether this node is the coordinator");
	worker = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull));
	PopActiveSnapshot();
	SPI_finish();
	return worker && !isnull;
}

/* run() on a Citus worker: refused, the coordinator runs for every node. */
void
anonymize_citus_refuse_worker_node(void)
{
	if (anonymize_citus_worker_node())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("anonymize runs on the Citus coordinator, not on a worker node"),
				 errdetail("The coordinator's run erases the rows of every shard; a run on a worker would compete with it."),
				 errhint("Call anonymize.run() on the coordinator.")));
}

/* qsort() order of plan entries: by digest, then request index. */
static int
citus_cmp_entry(const void *a, const void *b)
{
	const CitusEntry *x = a;
	const CitusEntry *y = b;
	int			c = memcmp(x->digest, y->digest, ANON_SHA256_LEN);

	if (c != 0)
		return c;
	return (x->req > y->req) - (x->req < y->req);
}

/* The request's cut-off in the target's time type. */
static int64
citus_cutoff(AnonymizeRequest *r, Oid time_type)
{
	switch (time_type)
	{
		case TIMESTAMPTZOID:
			return r->end_tstz;
		case TIMESTAMPOID:
			return r->end_ts;
		default:
			return r->to_date;
	}
}

/* The plan's code of a time type. */
static int32
citus_time_code(Oid time_type)
{
	switch (time_type)
	{
		case TIMESTAMPTZOID:
			return ANONYMIZE_CITUS_TIME_TSTZ;
		case TIMESTAMPOID:
			return ANONYMIZE_CITUS_TIME_TS;
		default:
			return ANONYMIZE_CITUS_TIME_DATE;
	}
}

/* Add the entry of one canonical identifier of request i. */
static void
citus_add_entry(CitusEntry *e, const anon_hmac_key *pre, char kind,
				const char *canon, int i, int64 cutoff)
{
	if (anon_hmac(pre, kind, canon, strlen(canon), e->digest) != 0)
		elog(ERROR, "identifier too long for its digest");
	e->req = i;
	e->cutoff = cutoff;
}

/* See anonymize_citus.h. */
bytea *
anonymize_citus_plan(AnonymizeRequest *reqs, int nreqs, AnonymizeTarget *t)
{
	uint8		key[ANON_SHA256_LEN];
	anon_hmac_key pre;
	CitusEntry *entries = palloc(sizeof(CitusEntry) * (2 * nreqs + 1));
	int			n = 0;
	StringInfoData buf;

	if (!pg_strong_random(key, sizeof(key)))
		elog(ERROR, "could not generate a random key");
	anon_hmac_prepare(key, sizeof(key), &pre);
	for (int i = 0; i < nreqs; i++)
	{
		AnonymizeRequest *r = &reqs[i];
		int64		cutoff = citus_cutoff(r, t->time_type);

		if (!r->active || !r->scope[t->scope])
			continue;
		if ((t->kind & ANONYMIZE_KIND_PHONE_BIT) && r->has_phone)
			citus_add_entry(&entries[n++], &pre, ANONYMIZE_KIND_PHONE_CHAR,
							r->phone, i, cutoff);
		if ((t->kind & ANONYMIZE_KIND_EMAIL_BIT) && r->email != NULL)
			citus_add_entry(&entries[n++], &pre, ANONYMIZE_KIND_EMAIL_CHAR,
							r->email, i, cutoff);
	}
	if (n == 0)
		return NULL;
	qsort(entries, n, sizeof(CitusEntry), citus_cmp_entry);

	pq_begintypsend(&buf);
	pq_sendint32(&buf, ANONYMIZE_CITUS_PLAN_VERSION);
	pq_sendint32(&buf, t->kind);
	pq_sendint32(&buf, citus_time_code(t->time_type));
	pq_sendstring(&buf, anonymize_country_code ? anonymize_country_code : "");
	pq_sendstring(&buf, anonymize_trunk_prefix ? anonymize_trunk_prefix : "");
	pq_sendbytes(&buf, (const char *) key, sizeof(key));
	pq_sendint32(&buf, n);
	for (int i = 0; i < n; i++)
	{
		pq_sendbytes(&buf, (const char *) entries[i].digest, ANON_SHA256_LEN);
		pq_sendint32(&buf, entries[i].req);
		pq_sendint64(&buf, entries[i].cutoff);
	}
	explicit_bzero(key, sizeof(key));
	explicit_bzero(&pre, sizeof(pre));
	pfree(entries);
	return pq_endtypsend(&buf);
}

/* See anonymize_citus.h. */
char *
anonymize_citus_match_expr(AnonymizeTarget *t, int param)
{
	const char *col = quote_identifier(t->col);

	if (anonymize_target_numeric(t))
		return psprintf("anonymize._citus_match(CASE WHEN (t.%s)::pg_catalog.text"
						" OPERATOR(pg_catalog.~) '^[0-9]+$'"
						" THEN '+' OPERATOR(pg_catalog.||) (t.%s)::pg_catalog.text END,"
						" t.%s, $%d)",
						col, col, quote_identifier(t->time_col), param);
	return psprintf("anonymize._citus_match((t.%s)::pg_catalog.text, t.%s, $%d)",
					col, quote_identifier(t->time_col), param);
}

/* See anonymize_citus.h. */
void
anonymize_citus_count(AnonymizeRequest *reqs, int nreqs, AnonymizeTarget *t,
					  int64 *matched, int64 *undated)
{
	bytea	   *plan = anonymize_citus_plan(reqs, nreqs, t);
	char	   *sql;

	if (plan == NULL)
		return;
	/* every shard groups its own rows; the rows no request matches are one group */
	sql = psprintf("SELECT %s, t.%s IS NULL, pg_catalog.count(*) FROM %s AS t GROUP BY 1, 2",
				   anonymize_citus_match_expr(t, 1), quote_identifier(t->time_col),
				   t->name);
	if (SPI_execute_with_args(sql, 1, (Oid[]) {BYTEAOID},
							  (Datum[]) {PointerGetDatum(plan)}, NULL,
							  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count the matches of a Citus target");
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		bool		isnull;
		bool		mnull;
		Datum		md = SPI_getbinval(SPI_tuptable->vals[row],
									   SPI_tuptable->tupdesc, 1, &mnull);
		ArrayType  *m;
		bool		nulltime = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[row],
														  SPI_tuptable->tupdesc, 2, &isnull));
		int64		rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row],
													   SPI_tuptable->tupdesc, 3, &isnull));
		int32	   *idx;
		int			n;

		if (mnull)
			continue;			/* the rows that match no request */
		m = DatumGetArrayTypeP(md);
		idx = (int32 *) ARR_DATA_PTR(m);
		n = ArrayGetNItems(ARR_NDIM(m), ARR_DIMS(m));

		for (int i = 0; i < n; i++)
			if (idx[i] >= 0 && idx[i] < nreqs)
				matched[idx[i]] += rows;
		if (nulltime && undated)
			*undated += rows;
	}
}
