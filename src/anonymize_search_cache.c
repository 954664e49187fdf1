/*-------------------------------------------------------------------------
 *
 * anonymize_search_cache.c
 *	  The per-backend set of digests that is_anonymized() and the protect()
 *	  guard probe; see anonymize_search_cache.h.
 *
 * Layout: two open-addressing tables (linear probing, at most half full),
 * each behind a Bloom filter and probed over 4-byte fingerprints, of
 * 32-byte entries: a 128-bit tag, a flag per status class and the latest
 * to_date of the pending requests per scope; requests naming the same
 * identifier share an entry.
 *	  - the digest table, for is_anonymized(): the tag is the first 16 bytes
 *		of the identifier's HMAC digest (a false match needs a 2^-128
 *		accident, and nobody can aim at one without the key);
 *	  - the pending table, for the guard, which runs once per row and cares
 *		only about requests not yet Done: the tag is a 128-bit hash with
 *		random seeds of this backend (hash_bytes_extended() twice), a few
 *		tens of nanoseconds where the HMAC takes a few hundred.
 *
 * Freshness: the page's trigger invalidates the page in the relcache on
 * every row change, and our relcache callback marks the cache stale; the
 * lookup calls AcceptInvalidationMessages() once per statement, so a
 * commit in another session counts at this session's next statement, and
 * a change in this transaction counts after the next
 * CommandCounterIncrement().  The cache
 * is rebuilt with a snapshot taken after the invalidation was received, so
 * it sees the change that caused it.  That snapshot is a fresh catalog-
 * style MVCC snapshot (GetCatalogSnapshot() of a user table is always new),
 * which, unlike GetLatestSnapshot(), may be taken in parallel mode.
 *
 * Done requests are matched by the digests the run keeps, under the key of
 * anonymize.secret; pending ones by digesting their canonical forms with
 * the same key.  Without a key no Done digest exists, and a random key of
 * this backend serves.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_enum.h"
#include "common/hashfn.h"
#include "access/xact.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "anonymize_bloom.h"
#include "anonymize_compat.h"
#include "anonymize_digest.h"
#include "anonymize_hmac_core.h"
#include "anonymize_normalize.h"
#include "anonymize_request.h"
#include "anonymize_search_cache.h"
#include "anonymize_settings.h"

/* Column numbers of anonymize.request_private and anonymize.secret. */
#define Anum_private_request_id		1
#define Anum_private_phone_digest	2
#define Anum_private_email_digest	3
#define Anum_secret_key				2
/* ... and of anonymize.ledger (1.1) */
#define Anum_ledger_request_id		1
#define Anum_ledger_digest			3
#define Anum_ledger_archive			5

#define ENTRY_USED			0x01
#define ENTRY_DONE			0x02
#define ENTRY_PENDING(s)	(0x04 << (s))

typedef struct SearchEntry
{
	uint64		tag[2];			/* first 16 bytes of the digest */
	DateADT		pending_to[ANONYMIZE_NUM_SCOPES];
	uint8		flags;
} SearchEntry;

/*
 * An open-addressing table: the probe runs over fp[], 4 bytes a slot (a
 * nonzero fingerprint of the tag, 0 for empty), and reads the 32-byte
 * entry only when the fingerprint matches.  With 100,000 requests fp[] is
 * 1-2 MB and stays in the CPU's cache, where a table of entries would be
 * 16 MB and cost a memory access per call.
 */
typedef struct SearchTable
{
	uint32	   *fp;
	SearchEntry *e;
	uint64		mask;
	AnonymizeBloom bloom;		/* of the tags, 3 bits a tag */
} SearchTable;

/*
 * Most values looked up name no request: the Bloom filter turns all but
 * about 0.5% of them away before the table is touched.  Its two hashes are
 * the halves of the tag's second word.
 */
#define CACHE_BLOOM_PROBES		3
#define CACHE_BLOOM_H1(tag)		((uint64) (uint32) (tag)[1])
#define CACHE_BLOOM_H2(tag)		(((tag)[1] >> 32) | 1)

/* The nonzero 4-byte fingerprint of a tag, for the probe. */
static inline uint32
cache_tag_fp(const uint64 *tag)
{
	uint32		fp = (uint32) (tag[0] >> 32);

	return fp ? fp : 1;
}

/* The cache; everything it allocates lives in cache_cxt. */
static MemoryContext cache_cxt = NULL;
static SearchTable cache_table;
static int64 cache_count = 0;

/* pending requests only, keyed by cache_fast_tag() */
static SearchTable pending_table;
static int64 pending_count[ANONYMIZE_NUM_SCOPES];
static uint64 fast_seed[2];
static bool fast_seed_made = false;
static bool cache_valid = false;
static uint64 cache_inval_generation = 0;
static Oid	cache_page_relid = InvalidOid;
static anon_hmac_key cache_key;
static char cache_country_code[8];
static char cache_trunk_prefix[8];
static bool callback_registered = false;

/* key of this backend when anonymize.secret has none */
static bool backend_key_made = false;
static uint8 backend_key[ANONYMIZE_KEY_LEN];

/* Relcache callback: a change of the page makes the cache stale. */
static void
cache_relcache_callback(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == cache_page_relid)
	{
		cache_valid = false;
		cache_inval_generation++;
	}
}

/* A string setting's value, "" for NULL. */
static inline const char *
cache_guc_or_empty(const char *s)
{
	return s ? s : "";
}

/* 128-bit tag of kind ':' canon with this backend's random seeds. */
static inline void
cache_fast_tag(char kind, const char *canon, size_t len, uint64 *tag)
{
	char		buf[ANON_HMAC_MAX_MSG];

	buf[0] = kind;
	buf[1] = ':';
	memcpy(buf + 2, canon, len);
	tag[0] = hash_bytes_extended((const unsigned char *) buf, (int) len + 2,
								 fast_seed[0]);
	tag[1] = hash_bytes_extended((const unsigned char *) buf, (int) len + 2,
								 fast_seed[1]);
}

/* The settings the canonical forms depend on are still those of the build? */
static inline bool
cache_settings_unchanged(void)
{
	return strcmp(cache_country_code, cache_guc_or_empty(anonymize_country_code)) == 0 &&
		strcmp(cache_trunk_prefix, cache_guc_or_empty(anonymize_trunk_prefix)) == 0;
}

/* Insert or merge e into t (never full). */
static void
cache_slot_put(SearchTable *t, int64 *count, const SearchEntry *e)
{
	uint32		fp = cache_tag_fp(e->tag);
	uint64		i = e->tag[0] & t->mask;

	for (;;)
	{
		SearchEntry *s = &t->e[i];

		if (t->fp[i] == 0)
		{
			t->fp[i] = fp;
			*s = *e;
			(*count)++;
			return;
		}
		if (t->fp[i] == fp && s->tag[0] == e->tag[0] && s->tag[1] == e->tag[1])
		{
			for (int sc = 0; sc < ANONYMIZE_NUM_SCOPES; sc++)
			{
				if (!(e->flags & ENTRY_PENDING(sc)))
					continue;
				if (!(s->flags & ENTRY_PENDING(sc)) ||
					e->pending_to[sc] > s->pending_to[sc])
					s->pending_to[sc] = e->pending_to[sc];
			}
			s->flags |= e->flags;
			return;
		}
		i = (i + 1) & t->mask;
	}
}

/* A table for n entries, at most half full, filled from items[]. */
static SearchTable
cache_table_make(const SearchEntry *items, int64 n, int64 *count)
{
	SearchTable t;
	uint64		capacity = 16;

	while (capacity < (uint64) n * 2)
		capacity <<= 1;
	t.fp = palloc_extended(capacity * sizeof(uint32), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	t.e = palloc_extended(capacity * sizeof(SearchEntry), MCXT_ALLOC_HUGE);
	t.mask = capacity - 1;
	anonymize_bloom_init(&t.bloom, (uint64) n, CACHE_BLOOM_PROBES);
	*count = 0;
	for (int64 i = 0; i < n; i++)
	{
		cache_slot_put(&t, count, &items[i]);
		anonymize_bloom_add(&t.bloom, CACHE_BLOOM_H1(items[i].tag),
							CACHE_BLOOM_H2(items[i].tag));
	}
	return t;
}

/* A growing array of entries, before they go into the table. */
typedef struct CacheEntryList
{
	SearchEntry *items;
	int64		n;
	int64		cap;
} CacheEntryList;

/* Append an entry of digest (or tag), flags and pending scopes. */
static void
cache_list_add(CacheEntryList *l, const uint8 *digest, uint8 flags,
			   const bool *scopes, DateADT to_date)
{
	SearchEntry *e;

	if (l->n == l->cap)
	{
		l->cap = l->cap ? l->cap * 2 : 256;
		l->items = l->items ? repalloc_huge(l->items, l->cap * sizeof(SearchEntry))
			: palloc_extended(l->cap * sizeof(SearchEntry), MCXT_ALLOC_HUGE);
	}
	e = &l->items[l->n++];
	memset(e, 0, sizeof(*e));
	memcpy(e->tag, digest, sizeof(e->tag));
	e->flags = ENTRY_USED | flags;
	for (int sc = 0; sc < ANONYMIZE_NUM_SCOPES; sc++)
		if (scopes != NULL && scopes[sc])
		{
			e->flags |= ENTRY_PENDING(sc);
			e->pending_to[sc] = to_date;
		}
}

/* Column attnum of tup: the bytes of a bytea of exactly len bytes, or NULL. */
static const uint8 *
cache_fixed_bytea(HeapTuple tup, int attnum, TupleDesc desc, int len)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, attnum, desc, &isnull);
	bytea	   *b;

	if (isnull)
		return NULL;
	b = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(b) != len)
		return NULL;
	return (const uint8 *) VARDATA_ANY(b);
}

/*
 * The key of anonymize.secret, read with snap and no privilege check.  (Not
 * anonymize_digest_key(): that one takes GetLatestSnapshot(), which is not
 * allowed in parallel mode, and the guard runs in parallel workers.)
 */
static bool
cache_read_secret_key(Oid nsp, Snapshot snap, uint8 *key)
{
	Oid			relid = get_relname_relid("secret", nsp);
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, AccessShareLock);
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		const uint8 *k = cache_fixed_bytea(tup, Anum_secret_key,
										   RelationGetDescr(rel),
										   ANONYMIZE_KEY_LEN);

		if (k == NULL)
			continue;
		memcpy(key, k, ANONYMIZE_KEY_LEN);
		found = true;
		break;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Digest of a page value (phone or email column) into digest[], and its
 * fast tag into tag[].
 */
static bool
cache_digest_page_value(Datum d, char kind, uint8 *digest, uint64 *tag)
{
	text	   *t = DatumGetTextPP(d);
	const char *s = VARDATA_ANY(t);
	size_t		len = VARSIZE_ANY_EXHDR(t);
	uint8		full[ANON_SHA256_LEN];
	bool		ok = false;

	if (kind == ANONYMIZE_KIND_PHONE)
	{
		char		canon[ANON_PHONE_CANON_SIZE];

		if (anonymize_phone_canonical(s, len, true, false, canon) &&
			anon_hmac(&cache_key, kind, canon, strlen(canon), full) == 0)
		{
			cache_fast_tag(kind, canon, strlen(canon), tag);
			ok = true;
		}
	}
	else
	{
		char	   *canon = anonymize_email_canonical(s, len, true, false);

		if (canon != NULL &&
			anon_hmac(&cache_key, kind, canon, strlen(canon), full) == 0)
		{
			cache_fast_tag(kind, canon, strlen(canon), tag);
			ok = true;
		}
	}
	if (ok)
		memcpy(digest, full, ANONYMIZE_DIGEST_LEN);
	return ok;
}

/* The OID of a label of the request_status enum. */
static Oid
cache_status_oid(Oid typid, const char *label)
{
	Oid			oid = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
									  ObjectIdGetDatum(typid),
									  CStringGetDatum(label));

	if (!OidIsValid(oid))
		elog(ERROR, "request_status has no label %s", label);
	return oid;
}

/* What one build of the cache collects before its tables are made. */
typedef struct CacheBuild
{
	CacheEntryList	list;			/* entries of the digest table */
	CacheEntryList	plist;			/* entries of the pending table */
	int64		pscopes[ANONYMIZE_NUM_SCOPES];	/* pending requests per scope */
	HTAB	   *done_ids;		/* ids of Done archive requests */
	Oid			st_waiting;		/* the request_status labels' OIDs */
	Oid			st_running;
	Oid			st_held;
	Oid			st_done;
} CacheBuild;

/* Register the relcache callback that marks the cache stale, once. */
static void
cache_register_callback(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(cache_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
}

/*
 * The key of the digests (anonymize.secret's, else this backend's random
 * one) into cache_key, and this backend's seeds of the fast tags.
 */
static void
cache_prepare_key(Oid nsp, Snapshot snap)
{
	uint8		key[ANONYMIZE_KEY_LEN];

	if (!cache_read_secret_key(nsp, snap, key))
	{
		if (!backend_key_made)
		{
			if (!pg_strong_random(backend_key, sizeof(backend_key)))
				elog(ERROR, "could not generate a random key");
			backend_key_made = true;
		}
		memcpy(key, backend_key, sizeof(key));
	}
	anon_hmac_prepare(key, sizeof(key), &cache_key);
	if (!fast_seed_made)
	{
		if (!pg_strong_random(fast_seed, sizeof(fast_seed)))
			elog(ERROR, "could not generate a random seed");
		fast_seed_made = true;
	}

	/* the fast HMAC must give what the run stores: check it each build */
	{
		static const char probe[] = "+4700000000";
		uint8		a[ANONYMIZE_DIGEST_LEN];
		uint8		b[ANONYMIZE_DIGEST_LEN];

		anonymize_digest(key, ANONYMIZE_KIND_PHONE, probe, strlen(probe), a);
		anon_hmac(&cache_key, ANONYMIZE_KIND_PHONE, probe, strlen(probe), b);
		if (memcmp(a, b, sizeof(a)) != 0)
			elog(ERROR, "anonymize: HMAC-SHA256 self-check failed");
	}
	memset(key, 0, sizeof(key));
}

/* An empty build: the status labels of the page and the set of Done ids. */
static void
cache_build_init(CacheBuild *b, TupleDesc desc, MemoryContext cxt)
{
	Oid			status_type;
	HASHCTL		hctl;

	memset(b, 0, sizeof(*b));
	if (desc->natts < Anum_request_error)
		elog(ERROR, "anonymize.anonymize_request has an unexpected shape");
	status_type = TupleDescAttr(desc, Anum_request_status - 1)->atttypid;
	b->st_waiting = cache_status_oid(status_type, "Waiting");
	b->st_running = cache_status_oid(status_type, "Running");
	b->st_held = cache_status_oid(status_type, "Held");
	b->st_done = cache_status_oid(status_type, "Done");

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = sizeof(int64);
	hctl.entrysize = sizeof(int64);
	hctl.hcxt = cxt;
	b->done_ids = hash_create("anonymize done requests", 256, &hctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Add a pending request's phone or email, when it has a canonical form. */
static void
cache_add_pending_value(CacheBuild *b, Datum value, char kind,
						const bool *scopes, DateADT to_date)
{
	uint8		digest[ANONYMIZE_DIGEST_LEN];
	uint64		tag[2];

	if (!cache_digest_page_value(value, kind, digest, tag))
		return;
	cache_list_add(&b->list, digest, 0, scopes, to_date);
	cache_list_add(&b->plist, (const uint8 *) tag, 0, scopes, to_date);
}

/* One row of the page: a pending request by its identifiers, Done by id. */
static void
cache_add_page_row(CacheBuild *b, const Datum *values, const bool *nulls)
{
	Oid			status;
	bool		scopes[ANONYMIZE_NUM_SCOPES];

	if (nulls[Anum_request_status - 1])
		return;
	status = DatumGetObjectId(values[Anum_request_status - 1]);
	scopes[ANONYMIZE_SCOPE_ARCHIVE] = !nulls[Anum_request_archive - 1] &&
		DatumGetBool(values[Anum_request_archive - 1]);
	scopes[ANONYMIZE_SCOPE_SMS_SURVEY] = !nulls[Anum_request_sms_survey - 1] &&
		DatumGetBool(values[Anum_request_sms_survey - 1]);
	scopes[ANONYMIZE_SCOPE_RAW_DATA] = !nulls[Anum_request_raw_data - 1] &&
		DatumGetBool(values[Anum_request_raw_data - 1]);

	if (status == b->st_done)
	{
		int64		id = DatumGetInt64(values[Anum_request_id - 1]);

		if (scopes[ANONYMIZE_SCOPE_ARCHIVE])
			(void) hash_search(b->done_ids, &id, HASH_ENTER, NULL);
	}
	else if (status == b->st_waiting || status == b->st_running ||
			 status == b->st_held)
	{
		DateADT		to_date = nulls[Anum_request_to_date - 1] ? DATEVAL_NOEND :
			DatumGetDateADT(values[Anum_request_to_date - 1]);

		if (!nulls[Anum_request_phone - 1])
			cache_add_pending_value(b, values[Anum_request_phone - 1],
									ANONYMIZE_KIND_PHONE, scopes, to_date);
		if (!nulls[Anum_request_email - 1])
			cache_add_pending_value(b, values[Anum_request_email - 1],
									ANONYMIZE_KIND_EMAIL, scopes, to_date);
		for (int sc = 0; sc < ANONYMIZE_NUM_SCOPES; sc++)
			if (scopes[sc])
				b->pscopes[sc]++;
	}
}

/* Every row of the page, with snap. */
static void
cache_scan_page(CacheBuild *b, Relation page, Snapshot snap)
{
	TupleDesc	desc = RelationGetDescr(page);
	Datum	   *values = palloc(desc->natts * sizeof(Datum));
	bool	   *nulls = palloc(desc->natts * sizeof(bool));
	TableScanDesc scan;
	HeapTuple	tup;

	scan = table_beginscan(page, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		heap_deform_tuple(tup, desc, values, nulls);
		cache_add_page_row(b, values, nulls);
	}
	table_endscan(scan);
}

/* Done archive requests: the digests the run kept in request_private. */
static void
cache_scan_private(CacheBuild *b, Relation private, Snapshot snap)
{
	TupleDesc	pdesc = RelationGetDescr(private);
	TableScanDesc scan;
	HeapTuple	tup;

	scan = table_beginscan(private, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		int64		id;
		static const int cols[] = {Anum_private_phone_digest,
		Anum_private_email_digest};

		id = DatumGetInt64(heap_getattr(tup, Anum_private_request_id, pdesc, &isnull));
		if (isnull || hash_search(b->done_ids, &id, HASH_FIND, NULL) == NULL)
			continue;
		for (int i = 0; i < lengthof(cols); i++)
		{
			const uint8 *digest = cache_fixed_bytea(tup, cols[i], pdesc,
													ANONYMIZE_DIGEST_LEN);

			if (digest != NULL)
				cache_list_add(&b->list, digest, ENTRY_DONE, NULL, 0);
		}
	}
	table_endscan(scan);
}

/*
 * Done archive requests no longer on the page (purged by request_retention,
 * or imported): the digests the ledger keeps.
 */
static void
cache_scan_ledger(CacheBuild *b, Relation ledger, Snapshot snap)
{
	TupleDesc	desc = RelationGetDescr(ledger);
	TableScanDesc scan;
	HeapTuple	tup;

	scan = table_beginscan(ledger, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		int64		id;
		Datum		archive;
		const uint8 *digest;

		id = DatumGetInt64(heap_getattr(tup, Anum_ledger_request_id, desc, &isnull));
		if (isnull || hash_search(b->done_ids, &id, HASH_FIND, NULL) != NULL)
			continue;
		archive = heap_getattr(tup, Anum_ledger_archive, desc, &isnull);
		if (isnull || !DatumGetBool(archive))
			continue;
		digest = cache_fixed_bytea(tup, Anum_ledger_digest, desc, ANONYMIZE_DIGEST_LEN);
		if (digest != NULL)
			cache_list_add(&b->list, digest, ENTRY_DONE, NULL, 0);
	}
	table_endscan(scan);
}

/*
 * Make the tables of the build (powers of two at least twice the entries)
 * in newcxt and swap them in as the cache; valid unless an invalidation
 * arrived since generation.
 */
static void
cache_install(CacheBuild *b, MemoryContext newcxt, uint64 generation)
{
	SearchTable table;
	SearchTable ptable;
	int64		count = 0;
	int64		pcount = 0;

	table = cache_table_make(b->list.items, b->list.n, &count);
	if (b->list.items)
		pfree(b->list.items);
	ptable = cache_table_make(b->plist.items, b->plist.n, &pcount);
	if (b->plist.items)
		pfree(b->plist.items);
	hash_destroy(b->done_ids);

	MemoryContextSetParent(newcxt, TopMemoryContext);
	if (cache_cxt != NULL)
		MemoryContextDelete(cache_cxt);
	cache_cxt = newcxt;
	cache_table = table;
	cache_count = count;
	pending_table = ptable;
	memcpy(pending_count, b->pscopes, sizeof(pending_count));
	strlcpy(cache_country_code, cache_guc_or_empty(anonymize_country_code),
			sizeof(cache_country_code));
	strlcpy(cache_trunk_prefix, cache_guc_or_empty(anonymize_trunk_prefix),
			sizeof(cache_trunk_prefix));
	cache_valid = (generation == cache_inval_generation);
}

/*
 * Rebuild the cache.  Everything is allocated in a new context below the
 * caller's, moved under TopMemoryContext only once complete, so an error
 * half-way leaves the old (stale) cache and no leak.
 */
static void
cache_build(void)
{
	Oid			nsp;
	Oid			page_relid;
	Oid			private_relid;
	Relation	page;
	Relation	private;
	Oid			ledger_relid;
	Relation	ledger;
	Snapshot	snap;
	uint64		generation;
	MemoryContext newcxt;
	MemoryContext oldcxt;
	CacheBuild	b;

	cache_register_callback();
	anonymize_request_relids(&nsp, &page_relid, &private_relid);
	if (!OidIsValid(page_relid) || !OidIsValid(private_relid))
		elog(ERROR, "tables of the anonymize extension are missing");
	cache_page_relid = page_relid;

	newcxt = AllocSetContextCreate(CurrentMemoryContext,
								   "anonymize search cache",
								   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(newcxt);

	/*
	 * Lock first (that accepts pending invalidations), then note the
	 * generation, then take the snapshot: an invalidation received later is
	 * for a change this snapshot may miss, and leaves the cache stale.
	 */
	page = table_open(page_relid, AccessShareLock);
	private = table_open(private_relid, AccessShareLock);
	ledger_relid = get_relname_relid("ledger", nsp);
	ledger = OidIsValid(ledger_relid) ? table_open(ledger_relid, AccessShareLock) : NULL;
	generation = cache_inval_generation;
	snap = RegisterSnapshot(GetCatalogSnapshot(page_relid));

	cache_prepare_key(nsp, snap);
	cache_build_init(&b, RelationGetDescr(page), newcxt);
	cache_scan_page(&b, page, snap);
	if (hash_get_num_entries(b.done_ids) > 0)
		cache_scan_private(&b, private, snap);
	if (ledger != NULL)
		cache_scan_ledger(&b, ledger, snap);

	UnregisterSnapshot(snap);
	if (ledger != NULL)
		table_close(ledger, AccessShareLock);
	table_close(private, AccessShareLock);
	table_close(page, AccessShareLock);

	cache_install(&b, newcxt, generation);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Bring the cache up to date with committed (and our own) page changes.
 *
 * The guard runs once per row, so the shared invalidation queue and the
 * settings are looked at once per statement (and whenever a setting was
 * assigned since), not once per call: another session's change has to
 * count at the next statement, and changes of our own transaction reach
 * the callback directly at CommandCounterIncrement().
 */
static LocalTransactionId checked_lxid = InvalidLocalTransactionId;
static TimestampTz checked_stmt = 0;
static const char *checked_country_code = NULL;
static const char *checked_trunk_prefix = NULL;

/* Rebuild the cache when an invalidation or a setting made it stale. */
static inline void
cache_ensure(void)
{
	TimestampTz stmt = GetCurrentStatementStartTimestamp();

	if (stmt != checked_stmt || anonymize_proc_lxid(MyProc) != checked_lxid ||
		anonymize_country_code != checked_country_code ||
		anonymize_trunk_prefix != checked_trunk_prefix)
	{
		AcceptInvalidationMessages();
		if (!cache_settings_unchanged())
			cache_valid = false;
		checked_stmt = stmt;
		checked_lxid = anonymize_proc_lxid(MyProc);
		checked_country_code = anonymize_country_code;
		checked_trunk_prefix = anonymize_trunk_prefix;
	}
	if (!cache_valid || cache_cxt == NULL)
		cache_build();
}

/* Number of distinct digests in the cache. */
int64
anonymize_search_cache_size(void)
{
	cache_ensure();
	return cache_count;
}

/* The entry of the tag in t, or NULL. */
static inline const SearchEntry *
cache_probe(const SearchTable *t, const uint64 *tag)
{
	uint32		fp = cache_tag_fp(tag);

	if (!anonymize_bloom_may_contain(&t->bloom, CACHE_BLOOM_H1(tag),
									 CACHE_BLOOM_H2(tag)))
		return NULL;
	for (uint64 i = tag[0] & t->mask;; i = (i + 1) & t->mask)
	{
		if (t->fp[i] == 0)
			return NULL;
		if (t->fp[i] == fp && t->e[i].tag[0] == tag[0] && t->e[i].tag[1] == tag[1])
			return &t->e[i];
	}
}

/* Email canonical form of s into a buffer of the caller's; NULL if none. */
static const char *
cache_email_canonical(const char *s, size_t len, char *buf, size_t bufsize,
					  size_t *outlen)
{
	char	   *out = buf;

	if (len + 1 > bufsize)
		out = palloc(len + 1);
	if (anon_email_canonical(s, len, true, out, outlen) != ANON_EMAIL_OK)
		return NULL;
	return out;
}

/*
 * Canonical form of s[0..len): a phone number, else an email address, as
 * kinds allows.  Returns the kind, or 0 when it is neither.
 */
static char
cache_canonical(const char *s, size_t len, int kinds, char *phone,
				char *emailbuf, size_t emailbufsize, const char **canon,
				size_t *clen)
{
	if ((kinds & ANONYMIZE_SEARCH_PHONE) &&
		anonymize_phone_canonical(s, len, true, false, phone))
	{
		*canon = phone;
		*clen = strlen(phone);
		return ANONYMIZE_KIND_PHONE;
	}
	if ((kinds & ANONYMIZE_SEARCH_EMAIL) &&
		(*canon = cache_email_canonical(s, len, emailbuf, emailbufsize, clen)) != NULL)
		return ANONYMIZE_KIND_EMAIL;
	return 0;
}

/* What the cache knows of a value (see anonymize_search_cache.h). */
bool
anonymize_search_lookup(const char *s, size_t len, int kinds,
						AnonymizeSearchHit *hit)
{
	char		phone[ANON_PHONE_CANON_SIZE];
	char		emailbuf[ANON_EMAIL_MAX_LEN + 64];
	const char *canon;
	size_t		clen;
	char		kind;
	uint8		digest[ANON_SHA256_LEN];
	uint64		tag[2];
	const SearchEntry *e;

	cache_ensure();
	if (cache_count == 0)
		return false;
	kind = cache_canonical(s, len, kinds, phone, emailbuf, sizeof(emailbuf),
						   &canon, &clen);
	if (kind == 0 || anon_hmac(&cache_key, kind, canon, clen, digest) != 0)
		return false;
	memcpy(tag, digest, sizeof(tag));
	e = cache_probe(&cache_table, tag);
	if (e == NULL)
		return false;
	hit->done = (e->flags & ENTRY_DONE) != 0;
	for (int sc = 0; sc < ANONYMIZE_NUM_SCOPES; sc++)
	{
		hit->pending[sc] = (e->flags & ENTRY_PENDING(sc)) != 0;
		hit->pending_to[sc] = e->pending_to[sc];
	}
	return true;
}

/* The guard's question: a pending request of the scope names the value? */
bool
anonymize_search_pending(const char *s, size_t len, int kinds,
						 AnonymizeScope scope, DateADT *to_date)
{
	char		phone[ANON_PHONE_CANON_SIZE];
	char		emailbuf[ANON_EMAIL_MAX_LEN + 64];
	const char *canon;
	size_t		clen;
	char		kind;
	uint64		tag[2];
	const SearchEntry *e;

	cache_ensure();
	if (pending_count[scope] == 0)
		return false;
	kind = cache_canonical(s, len, kinds, phone, emailbuf, sizeof(emailbuf),
						   &canon, &clen);
	if (kind == 0 || clen + 2 > ANON_HMAC_MAX_MSG)
		return false;
	cache_fast_tag(kind, canon, clen, tag);
	e = cache_probe(&pending_table, tag);
	if (e == NULL || !(e->flags & ENTRY_PENDING(scope)))
		return false;
	*to_date = e->pending_to[scope];
	return true;
}
