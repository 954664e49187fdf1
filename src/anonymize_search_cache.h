/*-------------------------------------------------------------------------
 *
 * anonymize_search_cache.h
 *	  Per-backend cache of the identifiers that searches must not find:
 *	  what is_anonymized() and the protect() guard look values up in.
 *
 * The cache is a hash set of keyed digests (anonymize_digest.h): of each
 * Done archive request, the digests kept in anonymize.request_private; of
 * each Waiting, Running or Held request, the digests of its canonical
 * phone and email, with the request's to_date per scope.  A lookup
 * canonicalizes the value (as a phone, else as an email, leniently),
 * digests it and probes the set; no plaintext identifier is kept.
 *
 * The cache is read without privilege checks, so the caller's role needs
 * no right on the page, on request_private or on the key.  It is dropped
 * when the page is invalidated in the relcache (the page's trigger does
 * that for every row change) or when anonymize.country_code or
 * anonymize.trunk_prefix change, and rebuilt at the next lookup.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_SEARCH_CACHE_H
#define ANONYMIZE_SEARCH_CACHE_H

#include "utils/date.h"

/* Scopes of a request, as ticked on the page. */
typedef enum AnonymizeScope
{
	ANONYMIZE_SCOPE_ARCHIVE = 0,
	ANONYMIZE_SCOPE_SMS_SURVEY,
	ANONYMIZE_SCOPE_RAW_DATA,
	ANONYMIZE_NUM_SCOPES
} AnonymizeScope;

/* What the cache knows about one identifier. */
typedef struct AnonymizeSearchHit
{
	bool		done;			/* a Done request with the archive scope */
	bool		pending[ANONYMIZE_NUM_SCOPES];	/* a Waiting/Running/Held one */
	DateADT		pending_to[ANONYMIZE_NUM_SCOPES];	/* its latest to_date */
} AnonymizeSearchHit;

/* What a value may be read as: a target's kind. */
#define ANONYMIZE_SEARCH_PHONE	0x01
#define ANONYMIZE_SEARCH_EMAIL	0x02
#define ANONYMIZE_SEARCH_ANY	(ANONYMIZE_SEARCH_PHONE | ANONYMIZE_SEARCH_EMAIL)

/*
 * Look the value s[0..len) up, read as a phone number and/or an email
 * address as kinds allows (the run reads a target's values the same way).
 * Returns false when it is none of those, or no request names it; else
 * fills *hit.  Never raises for any value (it may for a broken
 * installation).
 */
extern bool anonymize_search_lookup(const char *s, size_t len, int kinds,
									AnonymizeSearchHit *hit);

/*
 * The guard's question, cheaper: does the value, read as kinds allows,
 * name a request of the scope that is not Done yet?  If so, *to_date is
 * the latest to_date of those requests.  Pending requests are looked up in
 * a second, smaller table keyed by a fast hash with a random seed of this
 * backend (the guard runs once per row, and only pending requests matter
 * to it); when the scope has no pending request at all, the value is not
 * even read.
 */
extern bool anonymize_search_pending(const char *s, size_t len, int kinds,
									 AnonymizeScope scope, DateADT *to_date);

/* Number of distinct digests in the cache (rebuilding it if needed). */
extern int64 anonymize_search_cache_size(void);

#endif							/* ANONYMIZE_SEARCH_CACHE_H */
