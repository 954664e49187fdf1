/*-------------------------------------------------------------------------
 *
 * anonymize_hmac_core.h
 *	  HMAC-SHA256 with the key's pads already hashed: the per-call digest of
 *	  is_anonymized() and the search guard.
 *
 * The digests a Done request keeps are HMAC-SHA256(key, kind ':' canonical)
 * (anonymize_digest.h), made with the server's HMAC.  Probing them once per
 * call with pg_hmac_create()/pg_hmac_free() costs a few microseconds, most
 * of it setting up the context and hashing the key's two pad blocks.  Here
 * the pads are hashed once per key (anon_hmac_prepare) and each digest then
 * costs two or three SHA-256 compressions, with no allocation.  The result
 * is the same HMAC-SHA256 (FIPS 180-4, RFC 2104); the cache checks that
 * against anonymize_digest() before it uses it.
 *
 * Like anonymize_core.h this is plain C: no postgres.h, no allocation.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_HMAC_CORE_H
#define ANONYMIZE_HMAC_CORE_H

#include <stddef.h>
#include <stdint.h>

#define ANON_SHA256_LEN		32
#define ANON_SHA256_BLOCK	64

/* Longest message anon_hmac() takes: kind, ':' and an email address. */
#define ANON_HMAC_MAX_MSG	512

typedef struct anon_hmac_key
{
	uint32_t	inner[8];		/* SHA-256 state after (key ^ ipad) */
	uint32_t	outer[8];		/* SHA-256 state after (key ^ opad) */
} anon_hmac_key;

/* Hash the pads of key[0..keylen); keylen must be <= 64. */
extern void anon_hmac_prepare(const uint8_t *key, size_t keylen,
							  anon_hmac_key *pre);

/*
 * out[32] = HMAC-SHA256(key, kind ':' msg[0..len)).  Returns 0, or -1 when
 * len + 2 > ANON_HMAC_MAX_MSG (out untouched).
 */
extern int	anon_hmac(const anon_hmac_key *pre, char kind, const char *msg,
					  size_t len, uint8_t *out);

/*
 * The compression uses the CPU's SHA instructions when it has them.  With
 * portable != 0, use the portable code only (tests compare the two).
 */
extern void anon_hmac_force_portable(int portable);

#endif							/* ANONYMIZE_HMAC_CORE_H */
