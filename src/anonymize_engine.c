/*-------------------------------------------------------------------------
 *
 * anonymize_engine.c
 *	  The matching engine of the run and of preview(): one sequential scan
 *	  of a target's table, each identifier canonicalized by the lenient core
 *	  functions and probed in a hash table of the due requests' canonical
 *	  phones and emails, then the time cut-off of each request it names.
 *
 * The cost of a scan does not depend on the number of requests: a row
 * costs one canonicalization and one probe.  Nothing here writes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "catalog/partition.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "port/pg_bitutils.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "anonymize_bloom.h"
#include "anonymize_compat.h"
#include "anonymize_engine.h"
#include "anonymize_ledger.h"
#include "anonymize_normalize.h"
#include "anonymize_settings.h"
#include "anonymize_throttle.h"

PG_FUNCTION_INFO_V1(anonymize_rewrite_recheck);

/* a key is the kind ('p' or 'e') followed by the canonical form */
typedef struct EngineMatchEntry
{
	uint32		hash;
	int			keylen;			/* 0: empty slot */
	char	   *key;
	int			head;			/* first posting */
	int			tail;			/* last posting */
} EngineMatchEntry;

typedef struct EnginePosting
{
	int			req;
	int			next;			/* -1 ends the list */
} EnginePosting;

/* rows between two polls of a parallel scan's leader */
#define ENGINE_POLL_ROWS	256

struct AnonymizeMatchSet
{
	AnonymizeRequest *reqs;
	int			nreqs;
	int			nkeys;
	uint32		mask;			/* nbuckets - 1 */
	EngineMatchEntry *buckets;
	EnginePosting *postings;
	int			npostings;
	int			maxpostings;
	int		   *matched;		/* scratch: requests a row matches */
	int64		undated;		/* rows matched whose time is NULL */
	AnonymizeLedgerSet *ledger; /* Done requests still in force, or NULL */
	const char *row_key;		/* the key of the row being reported */
	int			row_keylen;

	/*
	 * A Bloom filter of the keys' hashes (two bits a key): a row that
	 * matches nothing (almost every row) costs no cache miss in the buckets.
	 */
	AnonymizeBloom bloom;
};

/* The second hash of a key for the Bloom filter, from its first. */
static inline uint32
engine_bloom_second(uint32 hash)
{
	return pg_rotate_right32(hash * 0x9E3779B1, 15);
}

/* Fill the request's canonical forms and cut-offs; false if invalid. */
bool
anonymize_request_prepare(AnonymizeRequest *req, const char *phone,
						  const char *email, DateADT to_date)
{
	req->has_phone = false;
	req->email = NULL;
	if (phone != NULL)
	{
		if (!anonymize_phone_canonical(phone, strlen(phone), false, false,
									   req->phone))
			return false;
		req->has_phone = true;
	}
	if (email != NULL)
	{
		req->email = anonymize_email_canonical(email, strlen(email), false,
											   false);
		if (req->email == NULL)
			return false;
	}
	req->to_date = to_date;
	req->end_tstz = anonymize_date_end(to_date);
	/* a timestamp without time zone is local time: its date is its day */
	if (DATE_NOT_FINITE(to_date))
		req->end_ts = DATE_IS_NOBEGIN(to_date) ? DT_NOBEGIN : DT_NOEND;
	else
		req->end_ts = ((Timestamp) to_date + 1) * USECS_PER_DAY;
	return req->has_phone || req->email != NULL;
}

/* The entry of key in the match set, inserted when insert; NULL if absent. */
static EngineMatchEntry *
engine_matchset_lookup(AnonymizeMatchSet *ms, const char *key, int keylen,
					   uint32 hash, bool insert)
{
	uint32		i = hash & ms->mask;

	for (;;)
	{
		EngineMatchEntry *e = &ms->buckets[i];

		if (e->keylen == 0)
		{
			if (!insert)
				return NULL;
			e->hash = hash;
			e->keylen = keylen;
			e->key = pnstrdup(key, keylen);
			e->head = e->tail = -1;
			ms->nkeys++;
			return e;
		}
		if (e->hash == hash && e->keylen == keylen &&
			memcmp(e->key, key, keylen) == 0)
			return e;
		i = (i + 1) & ms->mask;
	}
}

/* Add request req under the key (kind char, canonical form) of keylen bytes. */
static void
engine_matchset_add_key(AnonymizeMatchSet *ms, const char *key, int keylen,
						int req)
{
	EngineMatchEntry *e;
	EnginePosting *p;
	uint32		hash;

	hash = hash_bytes((const unsigned char *) key, keylen);
	anonymize_bloom_add(&ms->bloom, hash, engine_bloom_second(hash));
	e = engine_matchset_lookup(ms, key, keylen, hash, true);
	/* the same request twice under one key (phone and email): once */
	if (e->tail >= 0 && ms->postings[e->tail].req == req)
		return;
	p = &ms->postings[ms->npostings];
	p->req = req;
	p->next = -1;
	if (e->tail >= 0)
		ms->postings[e->tail].next = ms->npostings;
	else
		e->head = ms->npostings;
	e->tail = ms->npostings;
	ms->npostings++;
}

/* Add request req under the key kind + canon. */
static void
engine_matchset_add(AnonymizeMatchSet *ms, char kind, const char *canon, int req)
{
	char		key[ANON_EMAIL_MAX_LEN + 2];
	int			len = strlen(canon);

	if (len > ANON_EMAIL_MAX_LEN)
		return;
	key[0] = kind;
	memcpy(key + 1, canon, len);
	engine_matchset_add_key(ms, key, len + 1, req);
}

/* The empty tables of a match set for at most maxkeys keys (postings). */
static void
engine_matchset_alloc(AnonymizeMatchSet *ms, AnonymizeRequest *reqs,
					  int nreqs, uint32 maxkeys)
{
	uint32		nbuckets = 16;

	while (nbuckets < maxkeys * 2)
		nbuckets <<= 1;
	/* two bits a key: about 1.5% false positives */
	anonymize_bloom_init(&ms->bloom, maxkeys, 2);
	ms->reqs = reqs;
	ms->nreqs = nreqs;
	ms->mask = nbuckets - 1;
	ms->buckets = palloc0(sizeof(EngineMatchEntry) * nbuckets);
	ms->maxpostings = maxkeys + 1;
	ms->postings = palloc(sizeof(EnginePosting) * ms->maxpostings);
	ms->matched = palloc(sizeof(int) * (nreqs + 1));
}

/* The match set of the active requests of a scope, for a target's kind. */
AnonymizeMatchSet *
anonymize_matchset_build(AnonymizeRequest *reqs, int nreqs, int kind,
						 int scope)
{
	AnonymizeMatchSet *ms = palloc0(sizeof(AnonymizeMatchSet));
	uint32		maxkeys = 0;

	/* keys at most: the table at most half full */
	for (int i = 0; i < nreqs; i++)
	{
		AnonymizeRequest *r = &reqs[i];

		if (!r->active || (scope >= 0 && !r->scope[scope]))
			continue;
		if ((kind & ANONYMIZE_KIND_PHONE_BIT) && r->has_phone)
			maxkeys++;
		if ((kind & ANONYMIZE_KIND_EMAIL_BIT) && r->email != NULL)
			maxkeys++;
	}
	engine_matchset_alloc(ms, reqs, nreqs, maxkeys);

	/* in order of the request array (by id): lowest id first per key */
	for (int i = 0; i < nreqs; i++)
	{
		AnonymizeRequest *r = &reqs[i];

		if (!r->active || (scope >= 0 && !r->scope[scope]))
			continue;
		if ((kind & ANONYMIZE_KIND_PHONE_BIT) && r->has_phone)
			engine_matchset_add(ms, ANONYMIZE_KIND_PHONE_CHAR, r->phone, i);
		if ((kind & ANONYMIZE_KIND_EMAIL_BIT) && r->email != NULL)
			engine_matchset_add(ms, ANONYMIZE_KIND_EMAIL_CHAR, r->email, i);
	}
	return ms;
}

/* Rows matched so far whose time is NULL. */
int64
anonymize_matchset_undated(AnonymizeMatchSet *ms)
{
	return ms->undated;
}

/* Number of distinct keys in the match set. */
int
anonymize_matchset_size(AnonymizeMatchSet *ms)
{
	return ms->nkeys;
}

/* Free the match set. */
void
anonymize_matchset_free(AnonymizeMatchSet *ms)
{
	for (uint32 i = 0; i <= ms->mask; i++)
		if (ms->buckets[i].keylen > 0)
			pfree(ms->buckets[i].key);
	pfree(ms->buckets);
	pfree(ms->postings);
	pfree(ms->matched);
	anonymize_bloom_free(&ms->bloom);
	if (ms->ledger)
		anonymize_ledger_set_free(ms->ledger);
	pfree(ms);
}

/*
 * The bytes of the match set's keys flattened (for a parallel scan's
 * workers): per key its length, its bytes, its postings' count and
 * requests, as int32s and bytes one after the other.
 */
Size
anonymize_matchset_flat_size(AnonymizeMatchSet *ms)
{
	Size		size = sizeof(int32) * 2;

	for (uint32 i = 0; i <= ms->mask; i++)
		if (ms->buckets[i].keylen > 0)
			size += sizeof(int32) * 2 + INTALIGN(ms->buckets[i].keylen);
	return size + sizeof(int32) * ms->npostings;
}

/* Flatten the match set's keys and postings into dst. */
void
anonymize_matchset_flatten(AnonymizeMatchSet *ms, void *dst)
{
	int32	   *w = (int32 *) dst;

	*w++ = ms->nkeys;
	*w++ = ms->npostings;
	for (uint32 i = 0; i <= ms->mask; i++)
	{
		EngineMatchEntry *e = &ms->buckets[i];
		int32	   *count;

		if (e->keylen == 0)
			continue;
		*w++ = e->keylen;
		memcpy(w, e->key, e->keylen);
		w = (int32 *) ((char *) w + INTALIGN(e->keylen));
		count = w++;
		*count = 0;
		for (int p = e->head; p >= 0; p = ms->postings[p].next)
		{
			*w++ = ms->postings[p].req;
			(*count)++;
		}
	}
}

/*
 * The match set flattened by anonymize_matchset_flatten(), over requests
 * reqs (a copy of the leader's): the same keys, each with the same
 * requests in the same order.
 */
AnonymizeMatchSet *
anonymize_matchset_unflatten(const void *src, AnonymizeRequest *reqs, int nreqs)
{
	const int32 *r = (const int32 *) src;
	AnonymizeMatchSet *ms = palloc0(sizeof(AnonymizeMatchSet));
	int			nkeys = *r++;
	int			npostings = *r++;

	engine_matchset_alloc(ms, reqs, nreqs, Max(nkeys, npostings));
	for (int k = 0; k < nkeys; k++)
	{
		int			keylen = *r++;
		const char *key = (const char *) r;
		int			n;

		r = (const int32 *) ((const char *) r + INTALIGN(keylen));
		n = *r++;
		for (int i = 0; i < n; i++)
			engine_matchset_add_key(ms, key, keylen, *r++);
	}
	return ms;
}

/* Check the rows the ledger says are due against ls as well. */
void
anonymize_matchset_set_ledger(AnonymizeMatchSet *ms, AnonymizeLedgerSet *ls)
{
	ms->ledger = ls;
}

/* Nothing to look for: no key and no ledger. */
bool
anonymize_matchset_empty(AnonymizeMatchSet *ms)
{
	return ms->nkeys == 0 && ms->ledger == NULL;
}

/* A scope's name as ANONYMIZE_SCOPE_*. */
int
anonymize_scope_number(const char *s)
{
	if (strcmp(s, "sms_survey") == 0)
		return ANONYMIZE_SCOPE_SMS_SURVEY;
	if (strcmp(s, "raw_data") == 0)
		return ANONYMIZE_SCOPE_RAW_DATA;
	return ANONYMIZE_SCOPE_ARCHIVE;
}

/* A target kind's name as ANONYMIZE_KIND_*_BIT flags. */
int
anonymize_kind_bits(const char *s)
{
	if (strcmp(s, "phone") == 0)
		return ANONYMIZE_KIND_PHONE_BIT;
	if (strcmp(s, "email") == 0)
		return ANONYMIZE_KIND_EMAIL_BIT;
	return ANONYMIZE_KIND_PHONE_BIT | ANONYMIZE_KIND_EMAIL_BIT;
}

/* Column col of row row of SPI_tuptable as a C string, or NULL. */
char *
anonymize_spi_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * The tables of a target that hold rows: the table itself, or the leaf
 * partitions of a partitioned table, and for an inheritance parent the
 * parent and every child at any depth, found anew at each call (children
 * added after registration included).  Each is scanned and rewritten
 * alone (ONLY).
 */
List *
anonymize_target_leaves(Oid relid)
{
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, find_all_inheritors(relid, AccessShareLock, NULL))
	{
		Oid			child = lfirst_oid(lc);

		if (get_rel_relkind(child) == RELKIND_RELATION)
			result = lappend_oid(result, child);
	}
	return result;
}

/* Fill a target from row row of the result of ANONYMIZE_TARGETS_SQL. */
void
anonymize_target_fill(AnonymizeTarget *t, int row)
{
	HeapTuple	tup = SPI_tuptable->vals[row];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	char	   *erase;

	t->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	t->name = anonymize_spi_text(row, 2);
	t->col = anonymize_spi_text(row, 3);
	t->kind = anonymize_kind_bits(anonymize_spi_text(row, 4));
	t->scope = anonymize_scope_number(anonymize_spi_text(row, 5));
	t->time_col = anonymize_spi_text(row, 6);
	t->time_type = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
	t->col_type = getBaseType(DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull)));
	erase = anonymize_spi_text(row, 9);
	t->erase_null = erase != NULL && strcmp(erase, "null") == 0;
	t->replacement = anonymize_spi_text(row, 10);
}

/* Is the identifier column a number (the digits of an international number)? */
bool
anonymize_target_numeric(AnonymizeTarget *t)
{
	return t->col_type == INT2OID || t->col_type == INT4OID ||
		t->col_type == INT8OID || t->col_type == NUMERICOID;
}

/*
 * The canonical key of a stored value, leniently: a phone number (kind
 * 'p') or an email address (kind 'e'), as the target's kind allows.
 * Returns the key length, 0 when the value is neither.
 */
static int
engine_value_key(const char *s, int len, int kind, char *key)
{
	if (kind & ANONYMIZE_KIND_PHONE_BIT)
	{
		if (anon_phone_canonical(s, len, true,
								 anonymize_country_code ? anonymize_country_code : "",
								 anonymize_trunk_prefix ? anonymize_trunk_prefix : "",
								 key + 1) == ANON_PHONE_OK)
		{
			key[0] = ANONYMIZE_KIND_PHONE_CHAR;
			return strlen(key + 1) + 1;
		}
	}
	if (kind & ANONYMIZE_KIND_EMAIL_BIT)
	{
		size_t		outlen;

		if (anon_email_canonical(s, len, true, key + 1, &outlen) == ANON_EMAIL_OK &&
			outlen <= ANON_EMAIL_MAX_LEN)
		{
			key[0] = ANONYMIZE_KIND_EMAIL_CHAR;
			return outlen + 1;
		}
	}
	return 0;
}

/*
 * The key of a number column's value: its digits read as an international
 * number, country code first ("+" and the digits).  0 for a negative or
 * fractional number.
 */
static int
engine_number_key(Oid type, Datum d, char *key)
{
	char		buf[64];
	int64		v;

	if (type == NUMERICOID)
	{
		char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, d));
		int			len = strlen(s);

		if (len == 0 || len > (int) sizeof(buf) - 2 ||
			strspn(s, "0123456789") != (size_t) len)
		{
			pfree(s);
			return 0;
		}
		buf[0] = '+';
		memcpy(buf + 1, s, len + 1);
		pfree(s);
	}
	else
	{
		v = type == INT8OID ? DatumGetInt64(d) :
			type == INT4OID ? DatumGetInt32(d) : DatumGetInt16(d);
		if (v <= 0)
			return 0;
		snprintf(buf, sizeof(buf), "+" INT64_FORMAT, v);
	}
	return engine_value_key(buf, strlen(buf), ANONYMIZE_KIND_PHONE_BIT, key);
}

/*
 * Can a leaf partition hold a row on or before the latest cut-off of the
 * requests in ms?  False only when its partition constraint proves that
 * every row lies after it (a partition of later months): then the scan
 * is skipped.  Tables that are not partitions always may.
 */
bool
anonymize_leaf_may_match(AnonymizeMatchSet *ms, AnonymizeTarget *target,
						 Relation leaf)
{
	List	   *partqual;
	AttrNumber	timeatt;
	Oid			opfamily;
	Oid			opno;
	Datum		cutoff = (Datum) 0;
	bool		any = false;
	Expr	   *clause;
	NullTest   *nulltest;

	if (!leaf->rd_rel->relispartition)
		return true;
	for (int i = 0; i < ms->nreqs; i++)
	{
		AnonymizeRequest *r = &ms->reqs[i];

		if (!r->active)
			continue;
		switch (target->time_type)
		{
			case TIMESTAMPTZOID:
				if (!any || r->end_tstz > DatumGetTimestampTz(cutoff))
					cutoff = TimestampTzGetDatum(r->end_tstz);
				break;
			case TIMESTAMPOID:
				if (!any || r->end_ts > DatumGetTimestamp(cutoff))
					cutoff = TimestampGetDatum(r->end_ts);
				break;
			case DATEOID:
				if (!any || r->to_date > DatumGetDateADT(cutoff))
					cutoff = DateADTGetDatum(r->to_date);
				break;
		}
		any = true;
	}
	if (!any)
		return false;

	partqual = RelationGetPartitionQual(leaf);
	timeatt = get_attnum(RelationGetRelid(leaf), target->time_col);
	if (partqual == NIL || timeatt == InvalidAttrNumber)
		return true;
	opfamily = get_opclass_family(GetDefaultOpClass(target->time_type, BTREE_AM_OID));
	opno = get_opfamily_member(opfamily, target->time_type, target->time_type,
							   target->time_type == DATEOID ?
							   BTLessEqualStrategyNumber : BTLessStrategyNumber);
	if (!OidIsValid(opno))
		return true;
	/* time_col < cut-off (date: <= to_date) */
	clause = make_opclause(opno, BOOLOID, false,
						   (Expr *) makeVar(1, timeatt, target->time_type, -1,
											InvalidOid, 0),
						   (Expr *) makeConst(target->time_type, -1, InvalidOid,
											  sizeof(int64), cutoff, false,
											  FLOAT8PASSBYVAL || target->time_type == DATEOID),
						   InvalidOid, InvalidOid);
	set_opfuncid((OpExpr *) clause);
	/* ... or NULL: a row of unknown time matches too */
	nulltest = makeNode(NullTest);
	nulltest->arg = (Expr *) makeVar(1, timeatt, target->time_type, -1,
									 InvalidOid, 0);
	nulltest->nulltesttype = IS_NULL;
	nulltest->location = -1;
	clause = makeBoolExpr(OR_EXPR, list_make2(clause, nulltest), -1);
	return !predicate_refuted_by(list_make1(clause), partqual, false);
}

/* Does a row with this time fall on or before the request's to_date? */
static inline bool
engine_time_matches(AnonymizeRequest *r, Oid time_type, Datum t)
{
	switch (time_type)
	{
		case TIMESTAMPTZOID:
			return DatumGetTimestampTz(t) < r->end_tstz;
		case TIMESTAMPOID:
			return DatumGetTimestamp(t) < r->end_ts;
		case DATEOID:
			return DatumGetDateADT(t) <= r->to_date;
	}
	return false;
}

/*
 * The canonical key of the identifier of a scanned row (see
 * engine_value_key()): a text value as stored, a number as the digits of
 * an international number.  0 when it is neither, or NULL.
 */
static int
engine_row_key(AnonymizeTarget *target, TupleTableSlot *slot,
			   AttrNumber idatt, char *key)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, idatt, &isnull);
	struct varlena *v;
	struct varlena *detoasted = NULL;
	int			keylen;

	if (isnull)
		return 0;
	if (anonymize_target_numeric(target))
		return engine_number_key(target->col_type, d, key);
	v = (struct varlena *) DatumGetPointer(d);
	/* (an out-of-line pointer has a 1-byte header: not VARATT_IS_SHORT) */
	if (VARATT_IS_EXTERNAL(v) || VARATT_IS_COMPRESSED(v))
	{
		/* toasted or compressed: long values are never identifiers */
		if (toast_raw_datum_size(d) - VARHDRSZ > ANONYMIZE_MAX_VALUE_LEN)
			return 0;
		v = detoasted = detoast_attr(v);
	}
	if (VARSIZE_ANY_EXHDR(v) > ANONYMIZE_MAX_VALUE_LEN)
		keylen = 0;
	else
		keylen = engine_value_key(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v),
								  target->kind, key);
	if (detoasted)
		pfree(detoasted);
	return keylen;
}

/* Is request req among the first n of matched[]? */
static inline bool
engine_matched_has(const int *matched, int n, int req)
{
	for (int i = 0; i < n; i++)
		if (matched[i] == req)
			return true;
	return false;
}

/*
 * The requests a row of key matches, by the match set's entry e (or
 * NULL) and, when the row is due, by the ledger's digests; the time
 * compared with each request's cut-off; the callback when any matched.
 */
static void
engine_report_row(AnonymizeMatchSet *ms, AnonymizeTarget *target, Oid leafid,
				  TupleTableSlot *slot, AttrNumber timeatt,
				  EngineMatchEntry *e, bool ledger_due, const char *key,
				  int keylen, anonymize_match_callback callback, void *arg)
{
	const int  *late = NULL;
	int			nlate = 0;
	int			nmatched = 0;
	bool		isnull;
	Datum		d;

	if (ledger_due)
		nlate = anonymize_ledger_probe(ms->ledger, key, keylen, &late);
	if (e == NULL && nlate == 0)
		return;

	/*
	 * A contact of unknown time cannot be shown to be after the request's
	 * date: it matches every request that names it.
	 */
	d = slot_getattr(slot, timeatt, &isnull);
	for (int p = e ? e->head : -1; p >= 0; p = ms->postings[p].next)
	{
		AnonymizeRequest *r = &ms->reqs[ms->postings[p].req];

		if (r->active &&
			(isnull || engine_time_matches(r, target->time_type, d)))
			ms->matched[nmatched++] = ms->postings[p].req;
	}
	for (int i = 0; i < nlate; i++)
	{
		AnonymizeRequest *r = &ms->reqs[late[i]];

		if (r->active && !engine_matched_has(ms->matched, nmatched, late[i]) &&
			(isnull || engine_time_matches(r, target->time_type, d)))
		{
			anonymize_ledger_fill(ms->ledger, r, key, keylen);
			ms->matched[nmatched++] = late[i];
		}
	}
	if (nmatched > 0)
	{
		if (isnull)
			ms->undated++;
		ms->row_key = key;
		ms->row_keylen = keylen;
		callback(arg, leafid, &slot->tts_tid, ms->matched, nmatched);
	}
}

/* The target's identifier and time columns in a leaf (an error if gone). */
static void
engine_leaf_columns(AnonymizeTarget *target, Relation leaf, AttrNumber *idatt,
					AttrNumber *timeatt)
{
	*idatt = get_attnum(RelationGetRelid(leaf), target->col);
	*timeatt = get_attnum(RelationGetRelid(leaf), target->time_col);
	if (*idatt == InvalidAttrNumber || *timeatt == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("a column of target %s is missing from table \"%s\"",
						target->name, RelationGetRelationName(leaf)),
				 errhint("Re-register the target with anonymize.add_target() or remove it with anonymize.remove_target().")));
}

/*
 * One row of a leaf, from a scan or an index probe: its key looked up in
 * the match set (and the ledger's, when the row is due), reported when it
 * matches.
 */
static void
engine_scan_slot(AnonymizeMatchSet *ms, AnonymizeTarget *target, Oid leafid,
				 TupleTableSlot *slot, AttrNumber idatt, AttrNumber timeatt,
				 anonymize_match_callback callback, void *arg)
{
	char		key[ANONYMIZE_MAX_VALUE_LEN + 2];
	int			keylen;
	EngineMatchEntry *e = NULL;
	bool		ledger_due;

	CHECK_FOR_INTERRUPTS();
	anonymize_throttle_point();
	/* with the ledger only, a row it need not check costs no more */
	ledger_due = ms->ledger != NULL && anonymize_ledger_row_due(ms->ledger, slot);
	if (ms->nkeys == 0 && !ledger_due)
		return;
	keylen = engine_row_key(target, slot, idatt, key);
	if (keylen == 0)
		return;
	if (ms->nkeys > 0)
	{
		uint32		hash = hash_bytes((const unsigned char *) key, keylen);

		if (anonymize_bloom_may_contain(&ms->bloom, hash,
										engine_bloom_second(hash)))
			e = engine_matchset_lookup(ms, key, keylen, hash, false);
	}
	engine_report_row(ms, target, leafid, slot, timeatt, e, ledger_due, key,
					  keylen, callback, arg);
}

/*
 * The rows of an open scan of a leaf of a target, each matching one
 * reported; poll(pollarg), when given, every ENGINE_POLL_ROWS rows.
 */
int64
anonymize_engine_scan_rows(AnonymizeMatchSet *ms, AnonymizeTarget *target,
						   Relation leaf, TableScanDesc scan,
						   anonymize_match_callback callback, void *arg,
						   void (*poll) (void *), void *pollarg)
{
	Oid			leafid = RelationGetRelid(leaf);
	AttrNumber	idatt;
	AttrNumber	timeatt;
	TupleTableSlot *slot;
	int64		nrows = 0;

	engine_leaf_columns(target, leaf, &idatt, &timeatt);
	if (anonymize_matchset_empty(ms))
		return 0;

	slot = table_slot_create(leaf, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		if (++nrows % ENGINE_POLL_ROWS == 0 && poll != NULL)
			poll(pollarg);
		engine_scan_slot(ms, target, leafid, slot, idatt, timeatt, callback, arg);
	}
	ExecDropSingleTupleTableSlot(slot);
	return nrows;
}

/* See anonymize_engine.h. */
int64
anonymize_engine_lookup(AnonymizeMatchSet *ms, AnonymizeTarget *target,
						Relation leaf, Relation index,
						anonymize_match_callback callback, void *arg)
{
	AttrNumber	idatt;
	AttrNumber	timeatt;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	ScanKeyData skey;
	RegProcedure eqproc = anonymize_probe_eq_proc(index);
	int64		nrows = 0;

	engine_leaf_columns(target, leaf, &idatt, &timeatt);
	slot = table_slot_create(leaf, NULL);
	scan = anonymize_index_beginscan(leaf, index, GetActiveSnapshot(), 1);
	for (uint32 b = 0; b <= ms->mask; b++)
	{
		EngineMatchEntry *e = &ms->buckets[b];

		if (e->keylen == 0 || e->key[0] != ANONYMIZE_KIND_PHONE_CHAR)
			continue;
		anonymize_probe_key(&skey, index, eqproc, e->key + 1, e->keylen - 1);
		index_rescan(scan, &skey, 1, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			nrows++;
			engine_scan_slot(ms, target, RelationGetRelid(leaf), slot, idatt,
							 timeatt, callback, arg);
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	return nrows;
}

/* See anonymize_engine.h. */
int64
anonymize_engine_seqscan(AnonymizeMatchSet *ms, AnonymizeTarget *target,
						 Relation leaf, anonymize_match_callback callback,
						 void *arg)
{
	TableScanDesc scan = table_beginscan(leaf, GetActiveSnapshot(), 0, NULL);
	int64		nrows;

	nrows = anonymize_engine_scan_rows(ms, target, leaf, scan, callback,
									   arg, NULL, NULL);
	table_endscan(scan);
	return nrows;
}

/*
 * Report each matching row of one leaf of a target: by the leaf's index
 * over canonical_phone() when it has one the engine may look up, else by a
 * sequential scan.  Rows come in TID order from a scan only.
 */
int64
anonymize_engine_scan(AnonymizeMatchSet *ms, AnonymizeTarget *target,
					  Relation leaf, anonymize_match_callback callback,
					  void *arg)
{
	Relation	index = anonymize_probe_index_open(ms, target, leaf);
	int64		nrows;

	if (index == NULL)
		return anonymize_engine_seqscan(ms, target, leaf, callback, arg);
	nrows = anonymize_engine_lookup(ms, target, leaf, index, callback, arg);
	index_close(index, AccessShareLock);
	return nrows;
}

/* The match set's ledger set, or NULL. */
AnonymizeLedgerSet *
anonymize_matchset_ledger(AnonymizeMatchSet *ms)
{
	return ms->ledger;
}

/*
 * In the callback: the canonical key (kind char first) of the row being
 * reported; its length in *keylen.
 */
const char *
anonymize_matchset_row_key(AnonymizeMatchSet *ms, int *keylen)
{
	*keylen = ms->row_keylen;
	return ms->row_key;
}

/*
 * A row of key matched requests reqs[0..n) in another process (a
 * parallel scan's worker): the late ones among them learn their canonical
 * form here too, as engine_report_row() teaches them.
 */
void
anonymize_matchset_fill_late(AnonymizeMatchSet *ms, const int *reqs, int n,
							 const char *key, int keylen)
{
	for (int i = 0; i < n; i++)
		if (ms->ledger != NULL && ms->reqs[reqs[i]].late)
			anonymize_ledger_fill(ms->ledger, &ms->reqs[reqs[i]], key, keylen);
}

/*
 * The run's recheck of a row before it rewrites it: the row (fetched
 * again, it may have changed since the scan) still holds an identifier of
 * request r in the target's column idatt.
 */
bool
anonymize_engine_recheck_row(AnonymizeTarget *target, TupleTableSlot *slot,
							 AttrNumber idatt, const AnonymizeRequest *r)
{
	char		key[ANONYMIZE_MAX_VALUE_LEN + 2];
	int			keylen = engine_row_key(target, slot, idatt, key);

	if (keylen == 0)
		return false;
	key[keylen] = '\0';
	if (key[0] == ANONYMIZE_KIND_PHONE_CHAR)
		return r->has_phone && strcmp(key + 1, r->phone) == 0;
	return r->email != NULL && strcmp(key + 1, r->email) == 0;
}

/* the requests of the run in progress in this process, for the recheck */
static AnonymizeRequest *recheck_reqs = NULL;
static int	recheck_nreqs = 0;

/* The requests of the run in progress, for _rewrite_recheck(). */
void
anonymize_engine_set_recheck(AnonymizeRequest *reqs, int nreqs)
{
	recheck_reqs = reqs;
	recheck_nreqs = nreqs;
}

/*
 * anonymize._rewrite_recheck(value text, req integer) returns boolean
 *
 * Used by the run's UPDATE: the row found at a scanned TID still holds an
 * identifier of request number req (an index into the run's requests).
 * Outside a run it is always false.
 */
Datum
anonymize_rewrite_recheck(PG_FUNCTION_ARGS)
{
	text	   *t;
	int32		req;
	AnonymizeRequest *r;
	char		key[ANONYMIZE_MAX_VALUE_LEN + 2];
	int			len;
	int			keylen;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	req = PG_GETARG_INT32(1);
	if (recheck_reqs == NULL || req < 0 || req >= recheck_nreqs)
		PG_RETURN_BOOL(false);
	r = &recheck_reqs[req];
	t = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(t);
	if (len > ANONYMIZE_MAX_VALUE_LEN)
		PG_RETURN_BOOL(false);
	keylen = engine_value_key(VARDATA_ANY(t), len,
							  ANONYMIZE_KIND_PHONE_BIT | ANONYMIZE_KIND_EMAIL_BIT, key);
	if (keylen == 0)
		PG_RETURN_BOOL(false);
	if (key[0] == ANONYMIZE_KIND_PHONE_CHAR)
		PG_RETURN_BOOL(r->has_phone && strcmp(key + 1, r->phone) == 0);
	key[keylen] = '\0';
	PG_RETURN_BOOL(r->email != NULL && strcmp(key + 1, r->email) == 0);
}
