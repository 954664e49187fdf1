/*-------------------------------------------------------------------------
 *
 * anonymize_citus_guard.c
 *	  The search guard of protect() on a Citus table: its row filter
 *	  anonymize._citus_guard_visible(), which runs where the shards are,
 *	  and the keyed digests of the active requests that the coordinator
 *	  keeps for it in Citus reference tables.
 *
 * The shards' policies run on the worker nodes, whose copies of the page
 * are empty.  So the coordinator keeps, in the reference table
 * anonymize.citus_guard (replicated by Citus to every node, written in the
 * transaction that changes a request), the HMAC-SHA256 of each canonical
 * identifier of every Waiting, Running or Held request under a key of the
 * guard's own (anonymize.citus_guard_key, with the settings of the
 * canonical forms), per scope with its to_date and the end of that day in
 * anonymize.timezone.  No identifier leaves the coordinator.
 *
 * On a worker, the filter reads the local placements of both tables once
 * per statement (fn_extra), without privilege checks (the portal's role
 * needs none), digests each row's value as the run's shards do and looks
 * it up.  On the coordinator (a reference table's placement there, a Citus
 * local table) it is the one-node guard, anonymize._guard_visible().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "anonymize_citus.h"
#include "anonymize_compat.h"
#include "anonymize_core.h"
#include "anonymize_digest.h"
#include "anonymize_engine.h"
#include "anonymize_hmac_core.h"
#include "anonymize_normalize.h"
#include "anonymize_settings.h"

PG_FUNCTION_INFO_V1(anonymize_citus_guard_visible);
PG_FUNCTION_INFO_V1(anonymize_citus_guard_entries);
PG_FUNCTION_INFO_V1(anonymize_citus_guard_key_new);

/* the one-node guard (anonymize_search.c), called on the coordinator */
extern Datum anonymize_guard_visible_date(PG_FUNCTION_ARGS);
extern Datum anonymize_guard_visible_timestamp(PG_FUNCTION_ARGS);
extern Datum anonymize_guard_visible_timestamptz(PG_FUNCTION_ARGS);

/* columns of anonymize.citus_guard and anonymize.citus_guard_key */
#define GUARD_COL_DIGEST	0
#define GUARD_COL_SCOPE		1
#define GUARD_COL_TO_DATE	2
#define GUARD_COL_TO_END	3
#define KEY_COL_KEY			0
#define KEY_COL_COUNTRY		1
#define KEY_COL_TRUNK		2

/* scopes as the policies name them */
#define GUARD_NUM_SCOPES	3

/* one digest of a pending request, in one scope */
typedef struct GuardEntry
{
	uint8		digest[ANON_SHA256_LEN];
	int			scope;
	DateADT		to_date;
	TimestampTz to_end;
} GuardEntry;

/* what a statement's filter knows: fn_extra */
typedef struct GuardState
{
	bool		coordinator;	/* this node holds the page */
	Oid			time_type;
	anon_hmac_key pre;
	char	   *country_code;
	char	   *trunk_prefix;
	int			n;
	GuardEntry *entries;		/* sorted by digest */
	bool		scoped[GUARD_NUM_SCOPES];	/* some entry of the scope */
} GuardState;

/* The index of a scope argument: 'a'rchive, 's'ms_survey, 'r'aw_data. */
static int
guard_scope_index(char c)
{
	switch (c)
	{
		case 's':
			return 1;
		case 'r':
			return 2;
		default:
			return 0;
	}
}

/* qsort() order of entries: by digest. */
static int
guard_cmp_entry(const void *a, const void *b)
{
	return memcmp(((const GuardEntry *) a)->digest,
				  ((const GuardEntry *) b)->digest, ANON_SHA256_LEN);
}

/*
 * The local placement of the reference table anonymize.<name>: its shard
 * here, found through pg_dist_shard.  An error when there is none: the
 * guard fails closed.
 */
static Oid
guard_placement(const char *name)
{
	Oid			nsp = get_namespace_oid("anonymize", false);
	bool		isnull;
	int64		shardid;
	Oid			relid;
	char	   *sql;

	sql = psprintf("SELECT s.shardid FROM pg_catalog.pg_dist_shard s"
				   " WHERE s.logicalrelid = %u", get_relname_relid(name, nsp));
	if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_dist_shard");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the search guard of anonymize is not set up on this Citus node"),
				 errdetail("anonymize.%s is not a Citus reference table.", name),
				 errhint("Call anonymize.protect() again on the coordinator.")));
	shardid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	relid = get_relname_relid(psprintf("%s_" INT64_FORMAT, name, shardid), nsp);
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the search guard of anonymize has no placement on this Citus node"),
				 errdetail("anonymize.%s has no shard placement here.", name),
				 errhint("Replicate the reference tables to this node with replicate_reference_tables().")));
	return relid;
}

/* Read the guard's key and settings from its placement into g. */
static void
guard_read_key(GuardState *g, Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	HeapTuple	tup = heap_getnext(scan, ForwardScanDirection);
	Datum		v[3];
	bool		nulls[3];
	bytea	   *key;

	if (tup == NULL || RelationGetDescr(rel)->natts != 3)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the search guard of anonymize has no key on this Citus node"),
				 errhint("Call anonymize.protect() again on the coordinator.")));
	heap_deform_tuple(tup, RelationGetDescr(rel), v, nulls);
	key = DatumGetByteaPP(v[KEY_COL_KEY]);
	if (nulls[KEY_COL_KEY] || VARSIZE_ANY_EXHDR(key) != ANONYMIZE_KEY_LEN)
		elog(ERROR, "the search guard's key is damaged");
	anon_hmac_prepare((const uint8 *) VARDATA_ANY(key), ANONYMIZE_KEY_LEN, &g->pre);
	g->country_code = nulls[KEY_COL_COUNTRY] ? "" : TextDatumGetCString(v[KEY_COL_COUNTRY]);
	g->trunk_prefix = nulls[KEY_COL_TRUNK] ? "" : TextDatumGetCString(v[KEY_COL_TRUNK]);
	table_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* Read the digests from their placement into g, sorted. */
static void
guard_read_entries(GuardState *g, Oid relid)
{
	Relation	rel = table_open(relid, AccessShareLock);
	TableScanDesc scan = table_beginscan(rel, GetActiveSnapshot(), 0, NULL);
	HeapTuple	tup;
	int			cap = 16;

	g->entries = palloc(sizeof(GuardEntry) * cap);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Datum		v[4];
		bool		nulls[4];
		GuardEntry *e;
		bytea	   *d;

		heap_deform_tuple(tup, RelationGetDescr(rel), v, nulls);
		if (nulls[GUARD_COL_DIGEST] || nulls[GUARD_COL_SCOPE] ||
			nulls[GUARD_COL_TO_DATE] || nulls[GUARD_COL_TO_END])
			continue;
		d = DatumGetByteaPP(v[GUARD_COL_DIGEST]);
		if (VARSIZE_ANY_EXHDR(d) != ANON_SHA256_LEN)
			continue;
		if (g->n == cap)
		{
			cap *= 2;
			g->entries = repalloc(g->entries, sizeof(GuardEntry) * cap);
		}
		e = &g->entries[g->n++];
		memcpy(e->digest, VARDATA_ANY(d), ANON_SHA256_LEN);
		e->scope = guard_scope_index(DatumGetChar(v[GUARD_COL_SCOPE]));
		e->to_date = DatumGetDateADT(v[GUARD_COL_TO_DATE]);
		e->to_end = DatumGetTimestampTz(v[GUARD_COL_TO_END]);
		g->scoped[e->scope] = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	qsort(g->entries, g->n, sizeof(GuardEntry), guard_cmp_entry);
}

/* The statement's state: made at its first row, kept in fn_extra. */
static GuardState *
guard_state(FunctionCallInfo fcinfo)
{
	GuardState *g = (GuardState *) fcinfo->flinfo->fn_extra;
	MemoryContext old;

	if (g != NULL)
		return g;
	old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	g = palloc0(sizeof(GuardState));
	g->time_type = get_fn_expr_argtype(fcinfo->flinfo, 1);
	g->coordinator = !anonymize_citus_worker_node();
	if (!g->coordinator)
	{
		Oid			key_rel;
		Oid			guard_rel;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		key_rel = guard_placement("citus_guard_key");
		guard_rel = guard_placement("citus_guard");
		SPI_finish();
		guard_read_key(g, key_rel);
		guard_read_entries(g, guard_rel);
	}
	MemoryContextSwitchTo(old);
	fcinfo->flinfo->fn_extra = g;
	return g;
}

/*
 * The canonical form of a stored value as the run's shards read it: a
 * phone number first, else an email address, as the target's kind allows;
 * *kind says which.  Returns its length, 0 when it is neither.
 */
static int
guard_value_key(GuardState *g, const char *s, int len, int kinds, char *kind,
				char *out)
{
	size_t		outlen;

	if ((kinds & ANONYMIZE_KIND_PHONE_BIT) &&
		anon_phone_canonical(s, len, true, g->country_code, g->trunk_prefix,
							 out) == ANON_PHONE_OK)
	{
		*kind = ANONYMIZE_KIND_PHONE_CHAR;
		return strlen(out);
	}
	if ((kinds & ANONYMIZE_KIND_EMAIL_BIT) &&
		anon_email_canonical(s, len, true, out, &outlen) == ANON_EMAIL_OK &&
		outlen <= ANON_EMAIL_MAX_LEN)
	{
		*kind = ANONYMIZE_KIND_EMAIL_CHAR;
		return outlen;
	}
	return 0;
}

/*
 * On a worker: the latest entry of the scope whose digest is the value's,
 * into *found; false when there is none.
 */
static bool
guard_pending(GuardState *g, text *t, int kinds, int scope, GuardEntry *found)
{
	char		canon[ANONYMIZE_MAX_VALUE_LEN + 2];
	int			len = VARSIZE_ANY_EXHDR(t);
	int			clen;
	char		kind;
	GuardEntry	key;
	int			lo = 0;
	int			hi = g->n;
	bool		any = false;

	if (!g->scoped[scope] || len > ANONYMIZE_MAX_VALUE_LEN)
		return false;
	clen = guard_value_key(g, VARDATA_ANY(t), len, kinds, &kind, canon);
	if (clen == 0 || anon_hmac(&g->pre, kind, canon, clen, key.digest) != 0)
		return false;
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (guard_cmp_entry(&g->entries[mid], &key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < g->n && guard_cmp_entry(&g->entries[lo], &key) == 0; lo++)
	{
		GuardEntry *e = &g->entries[lo];

		if (e->scope != scope || (any && e->to_date <= found->to_date))
			continue;
		*found = *e;
		any = true;
	}
	return any;
}

/* Is a row of time at (of the statement's type) after the entry's day? */
static bool
guard_after(GuardState *g, Datum at, GuardEntry *e)
{
	Timestamp	end;
	int			overflow = 0;

	switch (g->time_type)
	{
		case TIMESTAMPTZOID:
			return DatumGetTimestampTz(at) >= e->to_end;
		case TIMESTAMPOID:
			if (DATE_IS_NOBEGIN(e->to_date))
				return true;
			if (DATE_IS_NOEND(e->to_date) || e->to_date >= DATEVAL_NOEND - 1)
				return false;
			end = date2timestamp_opt_overflow(e->to_date + 1, &overflow);
			if (overflow != 0)
				return overflow < 0;
			return DatumGetTimestamp(at) >= end;
		default:
			return DatumGetDateADT(at) > e->to_date;
	}
}

/* The kinds a value is read as: 'p'hone, 'e'mail, 'b'oth. */
static int
guard_kinds(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(3))
		return ANONYMIZE_KIND_PHONE_BIT | ANONYMIZE_KIND_EMAIL_BIT;
	switch (PG_GETARG_CHAR(3))
	{
		case 'p':
			return ANONYMIZE_KIND_PHONE_BIT;
		case 'e':
			return ANONYMIZE_KIND_EMAIL_BIT;
		default:
			return ANONYMIZE_KIND_PHONE_BIT | ANONYMIZE_KIND_EMAIL_BIT;
	}
}

/*
 * _citus_guard_visible(value text, at date|timestamp|timestamptz, scope
 * "char", kind "char") returns boolean: what _guard_visible() answers on
 * one node, on any node of a Citus cluster.
 */
Datum
anonymize_citus_guard_visible(PG_FUNCTION_ARGS)
{
	GuardState *g = guard_state(fcinfo);
	GuardEntry	e;

	if (g->coordinator)
	{
		switch (g->time_type)
		{
			case TIMESTAMPTZOID:
				return anonymize_guard_visible_timestamptz(fcinfo);
			case TIMESTAMPOID:
				return anonymize_guard_visible_timestamp(fcinfo);
			default:
				return anonymize_guard_visible_date(fcinfo);
		}
	}
	if (PG_ARGISNULL(0) ||
		!guard_pending(g, PG_GETARG_TEXT_PP(0), guard_kinds(fcinfo),
					   PG_ARGISNULL(2) ? 0 : guard_scope_index(PG_GETARG_CHAR(2)), &e))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(guard_after(g, PG_GETARG_DATUM(1), &e));
}

/* Add the rows of one canonical identifier of a request to the result. */
static void
guard_emit(ReturnSetInfo *rsinfo, const anon_hmac_key *pre, char kind,
		   const char *canon, const bool *scopes, DateADT to_date)
{
	static const char scope_chars[GUARD_NUM_SCOPES] = {'a', 's', 'r'};
	uint8		digest[ANON_SHA256_LEN];
	bytea	   *b = palloc(VARHDRSZ + ANON_SHA256_LEN);

	if (anon_hmac(pre, kind, canon, strlen(canon), digest) != 0)
		return;
	SET_VARSIZE(b, VARHDRSZ + ANON_SHA256_LEN);
	memcpy(VARDATA(b), digest, ANON_SHA256_LEN);
	for (int s = 0; s < GUARD_NUM_SCOPES; s++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};

		if (!scopes[s])
			continue;
		values[GUARD_COL_DIGEST] = PointerGetDatum(b);
		values[GUARD_COL_SCOPE] = CharGetDatum(scope_chars[s]);
		values[GUARD_COL_TO_DATE] = DateADTGetDatum(to_date);
		values[GUARD_COL_TO_END] = TimestampTzGetDatum(anonymize_date_end(to_date));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/* The rows of one request of the page (SPI row i) under the key. */
static void
guard_emit_request(ReturnSetInfo *rsinfo, const anon_hmac_key *pre, uint64 i)
{
	HeapTuple	tup = SPI_tuptable->vals[i];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	bool		scopes[GUARD_NUM_SCOPES];
	DateADT		to_date = DatumGetDateADT(SPI_getbinval(tup, desc, 3, &isnull));
	Datum		d;

	for (int s = 0; s < GUARD_NUM_SCOPES; s++)
	{
		d = SPI_getbinval(tup, desc, 4 + s, &isnull);
		scopes[s] = !isnull && DatumGetBool(d);
	}
	d = SPI_getbinval(tup, desc, 1, &isnull);
	if (!isnull)
	{
		text	   *t = DatumGetTextPP(d);
		char		canon[ANON_PHONE_CANON_SIZE];

		if (anonymize_phone_canonical(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), true,
									  false, canon))
			guard_emit(rsinfo, pre, ANONYMIZE_KIND_PHONE_CHAR, canon, scopes, to_date);
	}
	d = SPI_getbinval(tup, desc, 2, &isnull);
	if (!isnull)
	{
		text	   *t = DatumGetTextPP(d);
		char	   *canon = anonymize_email_canonical(VARDATA_ANY(t),
													  VARSIZE_ANY_EXHDR(t), true, false);

		if (canon != NULL)
			guard_emit(rsinfo, pre, ANONYMIZE_KIND_EMAIL_CHAR, canon, scopes, to_date);
	}
}

/*
 * _citus_guard_entries(key bytea) returns table (digest bytea, scope
 * "char", to_date date, to_end timestamptz): the rows of
 * anonymize.citus_guard for the page as it is, under key, with this
 * node's settings.  Reads the page as its caller (the extension's owner).
 */
Datum
anonymize_citus_guard_entries(PG_FUNCTION_ARGS)
{
	bytea	   *key = PG_GETARG_BYTEA_PP(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	anon_hmac_key pre;

	if (VARSIZE_ANY_EXHDR(key) != ANONYMIZE_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the search guard's key must be %d bytes", ANONYMIZE_KEY_LEN)));
	InitMaterializedSRF(fcinfo, 0);
	anon_hmac_prepare((const uint8 *) VARDATA_ANY(key), ANONYMIZE_KEY_LEN, &pre);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT r.phone, r.email, r.to_date, r.archive, r.sms_survey, r.raw_data"
					" FROM anonymize.anonymize_request r"
					" WHERE r.status IN ('Waiting', 'Running', 'Held')",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the requests");
	for (uint64 i = 0; i < SPI_processed; i++)
		guard_emit_request(rsinfo, &pre, i);
	SPI_finish();
	explicit_bzero(&pre, sizeof(pre));
	return (Datum) 0;
}

/* _citus_guard_key_new() returns bytea: a random key for the guard. */
Datum
anonymize_citus_guard_key_new(PG_FUNCTION_ARGS)
{
	bytea	   *b = palloc(VARHDRSZ + ANONYMIZE_KEY_LEN);

	SET_VARSIZE(b, VARHDRSZ + ANONYMIZE_KEY_LEN);
	if (!pg_strong_random(VARDATA(b), ANONYMIZE_KEY_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random key")));
	PG_RETURN_BYTEA_P(b);
}
