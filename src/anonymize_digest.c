/*-------------------------------------------------------------------------
 *
 * anonymize_digest.c
 *	  The key in anonymize.secret and HMAC-SHA256 digests made with it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hmac.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "anonymize_digest.h"

/* Read the key row, bypassing privileges; false when there is none. */
static bool
digest_read_key(uint8 *key)
{
	Oid			nsp = get_namespace_oid("anonymize", false);
	Oid			relid = get_relname_relid("secret", nsp);
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;
	Snapshot	snap;

	if (!OidIsValid(relid))
		elog(ERROR, "table anonymize.secret is missing");

	rel = table_open(relid, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = systable_beginscan(rel, InvalidOid, false, snap, 0, NULL);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, 2, RelationGetDescr(rel), &isnull);
		bytea	   *b;

		if (isnull)
			continue;
		b = DatumGetByteaPP(d);
		if (VARSIZE_ANY_EXHDR(b) != ANONYMIZE_KEY_LEN)
			elog(ERROR, "anonymize.secret holds a key of the wrong length");
		memcpy(key, VARDATA_ANY(b), ANONYMIZE_KEY_LEN);
		found = true;
		break;
	}
	systable_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return found;
}

/* The key of the digests (see anonymize_digest.h). */
bool
anonymize_digest_key(uint8 *key, bool create)
{
	uint8		fresh[ANONYMIZE_KEY_LEN];
	bytea	   *b;
	Oid			argtypes[1] = {BYTEAOID};
	Datum		values[1];
	int			ret;

	if (digest_read_key(key))
		return true;
	if (!create)
		return false;

	if (!pg_strong_random(fresh, sizeof(fresh)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random key for anonymize digests")));
	b = palloc(VARHDRSZ + sizeof(fresh));
	SET_VARSIZE(b, VARHDRSZ + sizeof(fresh));
	memcpy(VARDATA(b), fresh, sizeof(fresh));
	values[0] = PointerGetDatum(b);

	/* the primary key makes a concurrent second key impossible */
	SPI_connect();
	ret = SPI_execute_with_args("INSERT INTO anonymize.secret (id, key) "
								"VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
								1, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not store the anonymize key: %d", ret);
	SPI_finish();
	CommandCounterIncrement();

	if (!digest_read_key(key))
		elog(ERROR, "the anonymize key was not stored");
	return true;
}

/* The keyed digest of a canonical identifier (see anonymize_digest.h). */
void
anonymize_digest(const uint8 *key, char kind, const char *canon, size_t len,
				 uint8 *out)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	uint8		prefix[2] = {(uint8) kind, ':'};

	if (ctx == NULL)
		elog(ERROR, "out of memory for HMAC context");
	if (pg_hmac_init(ctx, key, ANONYMIZE_KEY_LEN) < 0 ||
		pg_hmac_update(ctx, prefix, sizeof(prefix)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) canon, len) < 0 ||
		pg_hmac_final(ctx, out, ANONYMIZE_DIGEST_LEN) < 0)
	{
		const char *msg = pg_hmac_error(ctx);

		pg_hmac_free(ctx);
		elog(ERROR, "could not compute HMAC: %s", msg);
	}
	pg_hmac_free(ctx);
}
