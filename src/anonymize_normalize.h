/*-------------------------------------------------------------------------
 *
 * anonymize_normalize.h
 *	  Server-side canonical forms of phone numbers and emails: the core of
 *	  anonymize_core.h with the anonymize.* settings applied and errors
 *	  reported with SQLSTATEs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_NORMALIZE_H
#define ANONYMIZE_NORMALIZE_H

#include "anonymize_core.h"

/*
 * Canonical phone number of s[0..len) into out (ANON_PHONE_CANON_SIZE
 * bytes), with anonymize.country_code and anonymize.trunk_prefix.  Returns
 * true on success.  On failure: raises ERRCODE_INVALID_PARAMETER_VALUE when
 * raise_error, else returns false.  The error never shows the value.
 */
extern bool anonymize_phone_canonical(const char *s, size_t len, bool lenient,
									  bool raise_error, char *out);

/*
 * Canonical email address of s[0..len) as a palloc'd string, or NULL when
 * it is not one and !raise_error.
 */
extern char *anonymize_email_canonical(const char *s, size_t len,
									   bool lenient, bool raise_error);

/* The hint shown with every invalid phone number. */
#define ANONYMIZE_PHONE_HINT \
	"Enter a national number without country code, or a foreign number " \
	"with 00 and the country code in front of the national number; a " \
	"leading + and spaces, dots, dashes and parentheses are accepted."

#define ANONYMIZE_EMAIL_HINT \
	"Enter one address such as name@example.com, optionally as " \
	"\"Name\" <name@example.com>."

#endif							/* ANONYMIZE_NORMALIZE_H */
