/*-------------------------------------------------------------------------
 *
 * anonymize_core.h
 *	  Pure string logic of the anonymize extension: canonical phone numbers,
 *	  canonical email addresses and masks.
 *
 * Nothing declared here calls into the server: no palloc, no ereport, no
 * GUC.  Callers pass the settings and output buffers in.  That keeps the
 * logic usable from a fuzzing harness and a benchmark outside the server
 * (see fuzz/), and keeps the hot path of the erasure run allocation free.
 *
 * Only <stddef.h>, <stdbool.h> and <stdint.h> are needed to include it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_CORE_H
#define ANONYMIZE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* E.164: at most 15 digits; the canonical form is '+' and the digits. */
#define ANON_PHONE_MAX_DIGITS	15
#define ANON_PHONE_CANON_SIZE	(ANON_PHONE_MAX_DIGITS + 2)

/* Minimum digit counts, national and international (after 00 or +). */
#define ANON_PHONE_MIN_NATIONAL 3
#define ANON_PHONE_MIN_INTL		4

/* RFC 5321 path limit */
#define ANON_EMAIL_MAX_LEN		254

typedef enum anon_phone_status
{
	ANON_PHONE_OK = 0,
	ANON_PHONE_EMPTY,			/* no digits at all */
	ANON_PHONE_BAD_CHAR,		/* letter, symbol or misplaced '+' */
	ANON_PHONE_LONE_PLUS,		/* '+' or '00' with nothing after it */
	ANON_PHONE_SHORT_NATIONAL,	/* fewer than 3 national digits */
	ANON_PHONE_SHORT_INTL,		/* fewer than 4 digits after 00 or + */
	ANON_PHONE_BAD_COUNTRY,		/* country code starting with 0 */
	ANON_PHONE_TOO_LONG,		/* more than 15 digits in canonical form */
	ANON_PHONE_NO_COUNTRY		/* national number, no country configured */
} anon_phone_status;

typedef enum anon_email_status
{
	ANON_EMAIL_OK = 0,
	ANON_EMAIL_EMPTY,
	ANON_EMAIL_NO_AT,			/* no '@', or more than one */
	ANON_EMAIL_BAD_CHAR,		/* space, control or forbidden character */
	ANON_EMAIL_BAD_LOCAL,		/* empty or malformed part before '@' */
	ANON_EMAIL_BAD_DOMAIN,		/* empty or malformed part after '@' */
	ANON_EMAIL_BAD_BRACKETS,	/* "Name <addr>" form not closed */
	ANON_EMAIL_TOO_LONG
} anon_email_status;

/*
 * Phone numbers.
 *
 * anon_phone_canonical() writes the canonical form ('+' and digits, NUL
 * terminated) of in[0..len) into out, which must hold ANON_PHONE_CANON_SIZE
 * bytes.  country_code and trunk_prefix are digit strings, possibly empty.
 *
 * Strict mode accepts what a person types on the page: digits, an optional
 * leading '+', and spaces, dots, dashes and parentheses as separators.
 * Lenient mode, for values stored in the archive, also accepts surrounding
 * white space and a "tel:" prefix.  Neither mode ever reads past len.
 */
extern anon_phone_status anon_phone_canonical(const char *in, size_t len,
											  bool lenient,
											  const char *country_code,
											  const char *trunk_prefix,
											  char *out);

/*
 * Email addresses.
 *
 * anon_email_canonical() writes the lower-cased address of in[0..len) to
 * out (which must hold len + 1 bytes) and its length to *outlen.  Both
 * modes accept surrounding white space and the display-name form
 * `"Bob" <bob@example.no>`; lenient mode also accepts a "mailto:" prefix.
 * Bytes >= 0x80 are accepted as letters (internationalized addresses) and
 * kept as they are; only ASCII letters are folded to lower case.
 */
extern anon_email_status anon_email_canonical(const char *in, size_t len,
											  bool lenient,
											  char *out, size_t *outlen);

/*
 * Masks.  Character boundaries are found with the mblen callback, which
 * returns the byte length (>= 1) of the character starting at its argument;
 * anon_utf8_mblen() serves UTF-8 outside the server.  Output buffers must
 * hold len + 1 bytes for the masks (a masked character is one byte '*'),
 * and are NUL terminated.  Each returns the output length in bytes.
 */
typedef int (*anon_mblen_fn) (const unsigned char *s);

extern int	anon_utf8_mblen(const unsigned char *s);

extern size_t anon_mask_phone(const char *in, size_t len, int visible,
							  char *out);
extern size_t anon_mask_email(const char *in, size_t len, anon_mblen_fn mblen,
							  char *out);

/*
 * partial(): the first `prefix` characters, then `padding`, then the last
 * `suffix` characters.  prefix and suffix must be >= 0.  Where they would
 * overlap, suffix is cut so that no character is shown twice.  out must
 * hold len + padlen + 1 bytes.
 */
extern size_t anon_partial(const char *in, size_t len, int prefix,
						   const char *padding, size_t padlen, int suffix,
						   anon_mblen_fn mblen, char *out);

#endif							/* ANONYMIZE_CORE_H */
