/*-------------------------------------------------------------------------
 *
 * anonymize_citus_sql.c
 *	  The functions that the run's distributed statements call on every
 *	  shard of a Citus target: anonymize._citus_match(), which matches a
 *	  row against a match plan (anonymize_citus.c), and
 *	  anonymize._citus_scrub(), which zeroes the free space of a shard's
 *	  pages after its vacuum.
 *
 * _citus_match() canonicalizes the stored value as the engine does
 * (leniently; a value that is neither a phone number nor an email never
 * matches), digests it with the plan's key and looks the digest up among
 * the plan's, then compares the row's time with each request's cut-off.
 * It is IMMUTABLE: its answer depends on its arguments only (the
 * canonical forms' settings are in the plan), as Citus requires of a
 * function in a distributed UPDATE.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xlogdefs.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "anonymize_citus.h"
#include "anonymize_compat.h"
#include "anonymize_core.h"
#include "anonymize_hmac_core.h"
#include "anonymize_scrub.h"

PG_FUNCTION_INFO_V1(anonymize_citus_match);
PG_FUNCTION_INFO_V1(anonymize_citus_scrub);

/* one key of a parsed plan */
typedef struct CitusPlanEntry
{
	uint8		digest[ANON_SHA256_LEN];
	int32		req;
	int64		cutoff;
} CitusPlanEntry;

/* a parsed plan, kept in fn_extra while the same plan comes back */
typedef struct CitusPlan
{
	int			rawlen;
	char	   *raw;			/* the bytea's data, to recognise it */
	int			kind;
	int			timecode;
	char	   *country_code;
	char	   *trunk_prefix;
	anon_hmac_key pre;
	int			n;
	CitusPlanEntry *entries;
	int32	   *matched;		/* scratch: the indexes a row matches */
} CitusPlan;

/* Parse the plan's bytes into a CitusPlan in cxt. */
static CitusPlan *
citus_plan_parse(bytea *b, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	CitusPlan  *p = palloc0(sizeof(CitusPlan));
	StringInfoData buf;
	uint8		key[ANON_SHA256_LEN];

	p->rawlen = VARSIZE_ANY_EXHDR(b);
	p->raw = palloc(p->rawlen);
	memcpy(p->raw, VARDATA_ANY(b), p->rawlen);
	buf.data = p->raw;
	buf.len = p->rawlen;
	buf.maxlen = p->rawlen;
	buf.cursor = 0;
	if (pq_getmsgint(&buf, 4) != ANONYMIZE_CITUS_PLAN_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the anonymize match plan is of another version"),
				 errhint("Install the same version of anonymize on every Citus node.")));
	p->kind = pq_getmsgint(&buf, 4);
	p->timecode = pq_getmsgint(&buf, 4);
	p->country_code = pstrdup(pq_getmsgstring(&buf));
	p->trunk_prefix = pstrdup(pq_getmsgstring(&buf));
	pq_copymsgbytes(&buf, (char *) key, sizeof(key));
	anon_hmac_prepare(key, sizeof(key), &p->pre);
	explicit_bzero(key, sizeof(key));
	p->n = pq_getmsgint(&buf, 4);
	if (p->n < 0 || p->n > (buf.len - buf.cursor) / 44)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the anonymize match plan is damaged")));
	p->entries = palloc(sizeof(CitusPlanEntry) * Max(p->n, 1));
	p->matched = palloc(sizeof(int32) * Max(p->n, 1));
	for (int i = 0; i < p->n; i++)
	{
		pq_copymsgbytes(&buf, (char *) p->entries[i].digest, ANON_SHA256_LEN);
		p->entries[i].req = pq_getmsgint(&buf, 4);
		p->entries[i].cutoff = pq_getmsgint64(&buf);
	}
	pq_getmsgend(&buf);
	MemoryContextSwitchTo(old);
	return p;
}

/* The parsed plan of this call: fn_extra's when the bytes are the same. */
static CitusPlan *
citus_plan_get(FunctionCallInfo fcinfo, bytea *b)
{
	CitusPlan  *p = (CitusPlan *) fcinfo->flinfo->fn_extra;
	int			len = VARSIZE_ANY_EXHDR(b);

	if (p != NULL && p->rawlen == len && memcmp(p->raw, VARDATA_ANY(b), len) == 0)
		return p;
	p = citus_plan_parse(b, fcinfo->flinfo->fn_mcxt);
	fcinfo->flinfo->fn_extra = p;
	return p;
}

/*
 * The canonical form of a stored value as the engine reads it
 * (engine_value_key()): a phone number first, else an email address;
 * *kind says which.  Returns its length, 0 when it is neither.
 */
static int
citus_value_key(CitusPlan *p, const char *s, int len, char *kind, char *out)
{
	if (p->kind & ANONYMIZE_KIND_PHONE_BIT)
	{
		if (anon_phone_canonical(s, len, true, p->country_code, p->trunk_prefix,
								 out) == ANON_PHONE_OK)
		{
			*kind = ANONYMIZE_KIND_PHONE_CHAR;
			return strlen(out);
		}
	}
	if (p->kind & ANONYMIZE_KIND_EMAIL_BIT)
	{
		size_t		outlen;

		if (anon_email_canonical(s, len, true, out, &outlen) == ANON_EMAIL_OK &&
			outlen <= ANON_EMAIL_MAX_LEN)
		{
			*kind = ANONYMIZE_KIND_EMAIL_CHAR;
			return outlen;
		}
	}
	return 0;
}

/* Does a row of time t (of the plan's type) fall on or before cutoff? */
static bool
citus_time_matches(CitusPlan *p, Datum t, int64 cutoff)
{
	switch (p->timecode)
	{
		case ANONYMIZE_CITUS_TIME_TSTZ:
			return DatumGetTimestampTz(t) < cutoff;
		case ANONYMIZE_CITUS_TIME_TS:
			return DatumGetTimestamp(t) < cutoff;
		default:
			return (int64) DatumGetDateADT(t) <= cutoff;
	}
}

/* The first plan entry whose digest is d, or -1. */
static int
citus_plan_find(CitusPlan *p, const uint8 *d)
{
	int			lo = 0;
	int			hi = p->n;

	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (memcmp(p->entries[mid].digest, d, ANON_SHA256_LEN) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < p->n && memcmp(p->entries[lo].digest, d, ANON_SHA256_LEN) == 0)
		return lo;
	return -1;
}

/*
 * anonymize._citus_match(value text, at date|timestamp|timestamptz,
 * plan bytea) returns integer[]: the indexes of the plan's requests that
 * the row matches, lowest first, or NULL.  A NULL time matches every
 * request that names the value.
 */
Datum
anonymize_citus_match(PG_FUNCTION_ARGS)
{
	CitusPlan  *p;
	text	   *v;
	int			len;
	char		canon[ANONYMIZE_MAX_VALUE_LEN + 2];
	char		kind;
	int			clen;
	uint8		digest[ANON_SHA256_LEN];
	int			nmatched = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	v = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(v);
	if (len > ANONYMIZE_MAX_VALUE_LEN)
		PG_RETURN_NULL();
	p = citus_plan_get(fcinfo, PG_GETARG_BYTEA_PP(2));
	clen = citus_value_key(p, VARDATA_ANY(v), len, &kind, canon);
	if (clen == 0 || anon_hmac(&p->pre, kind, canon, clen, digest) != 0)
		PG_RETURN_NULL();
	for (int e = citus_plan_find(p, digest);
		 e >= 0 && e < p->n &&
		 memcmp(p->entries[e].digest, digest, ANON_SHA256_LEN) == 0; e++)
	{
		if (PG_ARGISNULL(1) ||
			citus_time_matches(p, PG_GETARG_DATUM(1), p->entries[e].cutoff))
			p->matched[nmatched++] = p->entries[e].req;
	}
	if (nmatched == 0)
		PG_RETURN_NULL();
	{
		Datum	   *d = palloc(sizeof(Datum) * nmatched);

		for (int i = 0; i < nmatched; i++)
			d[i] = Int32GetDatum(p->matched[i]);
		PG_RETURN_ARRAYTYPE_P(construct_array(d, nmatched, INT4OID, 4, true,
											  TYPALIGN_INT));
	}
}

/* Scrub every page of one relation, locked by the caller. */
static void
citus_scrub_rel(Relation rel, AnonymizeScrubStats *stats)
{
	anonymize_scrub_relation_blocks(rel, NULL, 0, InvalidXLogRecPtr, stats);
}

/* Scrub one table: its heap, its TOAST table and its indexes but hash. */
static void
citus_scrub_table(Oid relid, AnonymizeScrubStats *stats)
{
	Relation	rel = table_open(relid, AccessShareLock);
	List	   *indexes;
	ListCell   *lc;

	if (rel->rd_rel->relam != HEAP_TABLE_AM_OID)
	{
		table_close(rel, AccessShareLock);
		return;
	}
	citus_scrub_rel(rel, stats);
	if (OidIsValid(rel->rd_rel->reltoastrelid))
	{
		Relation	toast = table_open(rel->rd_rel->reltoastrelid, AccessShareLock);

		citus_scrub_rel(toast, stats);
		table_close(toast, AccessShareLock);
	}
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	irel = index_open(lfirst_oid(lc), AccessShareLock);

		if (irel->rd_rel->relam != HASH_AM_OID)
			citus_scrub_rel(irel, stats);
		index_close(irel, AccessShareLock);
	}
	list_free(indexes);
	table_close(rel, AccessShareLock);
}

/*
 * anonymize._citus_scrub(tbl regclass) returns bigint: after the vacuum of
 * a shard, zero and WAL-log the free space of every page of its tables
 * (the shard, or its leaf partitions), their TOAST tables and indexes, so
 * that no byte of an erased identifier stays in them.  Returns the pages
 * scrubbed.  Superuser only (the extension's owner calls it through
 * Citus).
 */
Datum
anonymize_citus_scrub(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	AnonymizeScrubStats stats;
	ListCell   *lc;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for anonymize._citus_scrub"),
				 errhint("The coordinator's run calls it as a superuser.")));
	memset(&stats, 0, sizeof(stats));
	foreach(lc, anonymize_target_leaves(relid))
		citus_scrub_table(lfirst_oid(lc), &stats);
	PG_RETURN_INT64(stats.pages_scrubbed);
}
