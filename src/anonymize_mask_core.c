/*-------------------------------------------------------------------------
 *
 * anonymize_mask_core.c
 *	  Masks for phone numbers, email addresses and generic partial masks,
 *	  in plain C.
 *
 * Like anonymize_normalize_core.c this file does not include postgres.h, so
 * that the fuzzing harness can build it alone.  Output is never longer than
 * the caller's buffer described in anonymize_core.h.
 *
 *-------------------------------------------------------------------------
 */
#include "anonymize_core.h"

#include <string.h>

/* Length of the UTF-8 character at s. */
int
anon_utf8_mblen(const unsigned char *s)
{
	if (*s < 0x80)
		return 1;
	if ((*s & 0xe0) == 0xc0)
		return 2;
	if ((*s & 0xf0) == 0xe0)
		return 3;
	if ((*s & 0xf8) == 0xf0)
		return 4;
	return 1;
}

/*
 * Byte length of the character at in[i], never past len.  A callback that
 * breaks its contract (0 or a negative length) counts as one byte: a
 * negative int cast to size_t would otherwise step backwards, forever.
 */
static size_t
anon_char_len(const char *in, size_t i, size_t len, anon_mblen_fn mblen)
{
	int			r = mblen((const unsigned char *) in + i);
	size_t		n = r < 1 ? 1 : (size_t) r;

	if (i + n > len)
		n = len - i;
	return n;
}

/* Every digit but the last visible becomes '*'. */
size_t
anon_mask_phone(const char *in, size_t len, int visible, char *out)
{
	size_t		ndigits = 0;
	size_t		seen = 0;

	if (visible < 0)
		visible = 0;
	for (size_t i = 0; i < len; i++)
		if (in[i] >= '0' && in[i] <= '9')
			ndigits++;

	for (size_t i = 0; i < len; i++)
	{
		if (in[i] >= '0' && in[i] <= '9')
		{
			seen++;
			out[i] = (ndigits - seen < (size_t) visible) ? in[i] : '*';
		}
		else
			out[i] = in[i];
	}
	out[len] = '\0';
	return len;
}

/*
 * Mask the characters of in[from..to) but the first: copy the first,
 * write '*' for each further character.  Returns the new output position.
 */
static size_t
anon_mask_run(const char *in, size_t from, size_t to, anon_mblen_fn mblen,
			  char *out, size_t o)
{
	size_t		i = from;
	bool		first = true;

	while (i < to)
	{
		size_t		n = anon_char_len(in, i, to, mblen);

		if (first && to - from > n)
		{
			memcpy(out + o, in + i, n);
			o += n;
		}
		else
			out[o++] = '*';
		first = false;
		i += n;
	}
	return o;
}

/* b*******@m*****.no: first character of each part, and the top-level domain. */
size_t
anon_mask_email(const char *in, size_t len, anon_mblen_fn mblen, char *out)
{
	size_t		at = len;
	size_t		dot = len;
	size_t		o = 0;

	for (size_t i = 0; i < len; i++)
		if (in[i] == '@')
			at = i;

	if (at == len)
	{
		/* not an address: keep only the first character */
		o = anon_mask_run(in, 0, len, mblen, out, 0);
		out[o] = '\0';
		return o;
	}

	for (size_t i = at + 1; i < len; i++)
		if (in[i] == '.')
			dot = i;

	o = anon_mask_run(in, 0, at, mblen, out, o);
	out[o++] = '@';
	o = anon_mask_run(in, at + 1, dot, mblen, out, o);
	/* the top-level domain stays readable */
	memcpy(out + o, in + dot, len - dot);
	o += len - dot;
	out[o] = '\0';
	return o;
}

/* PostgreSQL Anonymizer's partial(): prefix, padding, suffix. */
size_t
anon_partial(const char *in, size_t len, int prefix, const char *padding,
			 size_t padlen, int suffix, anon_mblen_fn mblen, char *out)
{
	size_t		nchars = 0;
	size_t		pre;
	size_t		suf;
	size_t		i;
	size_t		o = 0;
	size_t		c;

	for (i = 0; i < len; i += anon_char_len(in, i, len, mblen))
		nchars++;

	pre = prefix < 0 ? 0 : (size_t) prefix;
	suf = suffix < 0 ? 0 : (size_t) suffix;
	if (pre > nchars)
		pre = nchars;
	if (suf > nchars - pre)
		suf = nchars - pre;

	/* first `pre` characters */
	for (i = 0, c = 0; c < pre; c++)
	{
		size_t		n = anon_char_len(in, i, len, mblen);

		memcpy(out + o, in + i, n);
		o += n;
		i += n;
	}

	memcpy(out + o, padding, padlen);
	o += padlen;

	/* skip to the last `suf` characters */
	for (; c < nchars - suf; c++)
		i += anon_char_len(in, i, len, mblen);
	memcpy(out + o, in + i, len - i);
	o += len - i;
	out[o] = '\0';
	return o;
}
