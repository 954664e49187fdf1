/*-------------------------------------------------------------------------
 *
 * anonymize_normalize_core.c
 *	  Canonical forms of phone numbers and email addresses, in plain C.
 *
 * This file must not include postgres.h: it is compiled into the server
 * module and, unchanged, into the fuzzing harness and benchmarks.  It never
 * allocates and never reads past the length it is given.
 *
 *-------------------------------------------------------------------------
 */
#include "anonymize_core.h"

#include <string.h>

/* ASCII white space? */
static inline bool
anon_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
		c == '\v';
}

/* ASCII digit? */
static inline bool
anon_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* ASCII lower case of c. */
static inline unsigned char
anon_ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char) (c + ('a' - 'A')) : c;
}

/* Does in[0..len) start with the ASCII word (case-insensitive)? */
static bool
anon_has_prefix_ci(const char *in, size_t len, const char *word)
{
	size_t		wlen = strlen(word);

	if (len < wlen)
		return false;
	for (size_t i = 0; i < wlen; i++)
		if (anon_ascii_lower((unsigned char) in[i]) != (unsigned char) word[i])
			return false;
	return true;
}

/* Trim white space on both ends. */
static void
anon_trim(const char **in, size_t *len)
{
	while (*len > 0 && anon_is_space((unsigned char) (*in)[0]))
	{
		(*in)++;
		(*len)--;
	}
	while (*len > 0 && anon_is_space((unsigned char) (*in)[*len - 1]))
		(*len)--;
}

/* The canonical form of a phone number (see anonymize_core.h). */
anon_phone_status
anon_phone_canonical(const char *in, size_t len, bool lenient,
					 const char *country_code, const char *trunk_prefix,
					 char *out)
{
	/* room for a few digits too many, so that we can say "too long" */
	char		digits[ANON_PHONE_MAX_DIGITS + 4];
	size_t		ndigits = 0;
	int			zero_at = -1;	/* digit position of a "(0)", if any */
	bool		plus = false;
	bool		intl;
	const char *d;
	size_t		dn;
	size_t		cclen = country_code ? strlen(country_code) : 0;
	size_t		tplen = trunk_prefix ? strlen(trunk_prefix) : 0;

	out[0] = '\0';

	if (lenient)
	{
		anon_trim(&in, &len);
		if (anon_has_prefix_ci(in, len, "tel:"))
		{
			in += 4;
			len -= 4;
		}
	}

	if (len > 0 && in[0] == '+')
	{
		plus = true;
		in++;
		len--;
	}

	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) in[i];

		if (c == '(' && i + 2 < len && in[i + 1] == '0' && in[i + 2] == ')' &&
			zero_at < 0)
		{
			/* "(0)": a trunk prefix in brackets, see below */
			zero_at = (int) ndigits;
			i += 2;
			continue;
		}
		if (anon_is_digit(c))
		{
			if (ndigits >= sizeof(digits) - 1)
				return ANON_PHONE_TOO_LONG;
			digits[ndigits++] = (char) c;
		}
		else if (c == ' ' || c == '.' || c == '-' || c == '(' || c == ')')
			continue;
		else
			return ANON_PHONE_BAD_CHAR;
	}

	/*
	 * "+44 (0)20 ..." and "0049 (0)30 ...": the bracketed 0 is the trunk
	 * prefix, not dialled from abroad, and is dropped when it follows a
	 * country code (after '+', or after "00" and at least one digit).
	 * Anywhere else it is an ordinary 0 and goes back where it was.
	 */
	if (zero_at >= 0 &&
		!((plus && zero_at >= 1) ||
		  (zero_at >= 3 && digits[0] == '0' && digits[1] == '0')))
	{
		memmove(digits + zero_at + 1, digits + zero_at, ndigits - zero_at);
		digits[zero_at] = '0';
		ndigits++;
	}

	if (ndigits == 0)
		return plus ? ANON_PHONE_LONE_PLUS : ANON_PHONE_EMPTY;

	d = digits;
	dn = ndigits;
	intl = plus;
	if (!plus && dn >= 2 && d[0] == '0' && d[1] == '0')
	{
		intl = true;
		d += 2;
		dn -= 2;
		if (dn == 0)
			return ANON_PHONE_LONE_PLUS;
	}

	if (intl)
	{
		if (dn < ANON_PHONE_MIN_INTL)
			return ANON_PHONE_SHORT_INTL;
		if (d[0] == '0')
			return ANON_PHONE_BAD_COUNTRY;
		if (dn > ANON_PHONE_MAX_DIGITS)
			return ANON_PHONE_TOO_LONG;
		out[0] = '+';
		memcpy(out + 1, d, dn);
		out[dn + 1] = '\0';
		return ANON_PHONE_OK;
	}

	/* national number: drop the trunk prefix where one is configured */
	if (tplen > 0 && dn > tplen && memcmp(d, trunk_prefix, tplen) == 0)
	{
		d += tplen;
		dn -= tplen;
	}
	if (dn < ANON_PHONE_MIN_NATIONAL)
		return ANON_PHONE_SHORT_NATIONAL;
	if (cclen == 0)
		return ANON_PHONE_NO_COUNTRY;
	if (cclen + dn > ANON_PHONE_MAX_DIGITS)
		return ANON_PHONE_TOO_LONG;
	out[0] = '+';
	memcpy(out + 1, country_code, cclen);
	memcpy(out + 1 + cclen, d, dn);
	out[1 + cclen + dn] = '\0';
	return ANON_PHONE_OK;
}

/* Characters RFC 5322 allows unquoted in a local part, besides alnum. */
static bool
anon_is_local_char(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || anon_is_digit(c))
		return true;
	return strchr("!#$%&'*+/=?^_`{|}~-.", c) != NULL && c != '\0';
}

/* A character allowed in a domain name? */
static bool
anon_is_domain_char(unsigned char c)
{
	if (c >= 0x80)
		return true;
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		anon_is_digit(c) || c == '-' || c == '.';
}

/* The canonical form of an email address (see anonymize_core.h). */
anon_email_status
anon_email_canonical(const char *in, size_t len, bool lenient,
					 char *out, size_t *outlen)
{
	const char *at = NULL;
	const char *local;
	const char *domain;
	size_t		llen;
	size_t		dlen;

	*outlen = 0;
	out[0] = '\0';

	anon_trim(&in, &len);
	if (len == 0)
		return ANON_EMAIL_EMPTY;

	/* "Display Name" <address>: keep what is inside the last <...> */
	if (in[len - 1] == '>')
	{
		size_t		open = len - 1;

		while (open > 0 && in[open - 1] != '<')
			open--;
		if (open == 0)
			return ANON_EMAIL_BAD_BRACKETS;
		in += open;
		len -= open + 1;
		anon_trim(&in, &len);
	}
	else if (memchr(in, '<', len) != NULL)
		return ANON_EMAIL_BAD_BRACKETS;

	if (lenient && anon_has_prefix_ci(in, len, "mailto:"))
	{
		in += 7;
		len -= 7;
	}

	if (len == 0)
		return ANON_EMAIL_EMPTY;
	if (len > ANON_EMAIL_MAX_LEN)
		return ANON_EMAIL_TOO_LONG;

	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) in[i];

		if (c == '@')
		{
			if (at != NULL)
				return ANON_EMAIL_NO_AT;
			at = in + i;
		}
		else if (c < 0x21 || c == 0x7f || c == '<' || c == '>' ||
				 c == '"' || c == ',' || c == ';' || c == ':' || c == '\\' ||
				 c == '(' || c == ')' || c == '[' || c == ']')
			return ANON_EMAIL_BAD_CHAR;
	}
	if (at == NULL)
		return ANON_EMAIL_NO_AT;

	local = in;
	llen = (size_t) (at - in);
	domain = at + 1;
	dlen = len - llen - 1;

	/* local part: 1..64 allowed characters, no leading/trailing/double dot */
	if (llen == 0 || llen > 64 || local[0] == '.' || local[llen - 1] == '.')
		return ANON_EMAIL_BAD_LOCAL;
	for (size_t i = 0; i < llen; i++)
	{
		if (!anon_is_local_char((unsigned char) local[i]))
			return ANON_EMAIL_BAD_CHAR;
		if (local[i] == '.' && i + 1 < llen && local[i + 1] == '.')
			return ANON_EMAIL_BAD_LOCAL;
	}

	/* domain: dot-separated labels, at least two, no empty label */
	if (dlen == 0)
		return ANON_EMAIL_BAD_DOMAIN;
	{
		size_t		labels = 0;
		size_t		start = 0;

		for (size_t i = 0; i <= dlen; i++)
		{
			if (i == dlen || domain[i] == '.')
			{
				size_t		lablen = i - start;

				if (lablen == 0 || lablen > 63 ||
					domain[start] == '-' || domain[i - 1] == '-')
					return ANON_EMAIL_BAD_DOMAIN;
				labels++;
				start = i + 1;
			}
			else if (!anon_is_domain_char((unsigned char) domain[i]))
				return ANON_EMAIL_BAD_CHAR;
		}
		if (labels < 2)
			return ANON_EMAIL_BAD_DOMAIN;
	}

	for (size_t i = 0; i < len; i++)
		out[i] = (char) anon_ascii_lower((unsigned char) in[i]);
	out[len] = '\0';
	*outlen = len;
	return ANON_EMAIL_OK;
}
