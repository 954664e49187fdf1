/*-------------------------------------------------------------------------
 *
 * anonymize_digest.h
 *	  Keyed digests of canonical identifiers: what a Done request keeps so
 *	  that is_anonymized() can still recognise the identifier, without the
 *	  plaintext.
 *
 * digest = HMAC-SHA256(key, kind ':' canonical), kind 'p' (phone) or 'e'
 * (email).  The 32-byte key lives in anonymize.secret, which no role but
 * the extension's owner can read; it is made the first time a request is
 * finished and kept by dumps (pg_extension_config_dump).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_DIGEST_H
#define ANONYMIZE_DIGEST_H

#define ANONYMIZE_DIGEST_LEN	32
#define ANONYMIZE_KEY_LEN		32

#define ANONYMIZE_KIND_PHONE	'p'
#define ANONYMIZE_KIND_EMAIL	'e'

/*
 * Read the key into key[].  When there is none yet: with create, make one
 * (the caller must be allowed to insert into anonymize.secret, as the run
 * is); without, return false.  Reads bypass privileges, so that functions
 * called by the portal's role can use the key without seeing it.
 */
extern bool anonymize_digest_key(uint8 *key, bool create);

/* out[ANONYMIZE_DIGEST_LEN] = HMAC-SHA256(key, kind ':' canon[0..len)) */
extern void anonymize_digest(const uint8 *key, char kind, const char *canon,
							 size_t len, uint8 *out);

#endif							/* ANONYMIZE_DIGEST_H */
