/*-------------------------------------------------------------------------
 *
 * fuzz_mask.c
 *	  libFuzzer harness for anon_mask_phone(), anon_mask_email() and
 *	  anon_partial().
 *
 * Input: visible, prefix and suffix (signed bytes), the padding length,
 * a byte choosing the character-length callback, the padding, then the
 * value.  Outputs go to heap buffers of exactly the size the header
 * promises, so AddressSanitizer catches any byte written or read beyond.
 *
 * Properties on valid UTF-8 (what the server hands over): masks keep the
 * number of characters; mask_phone changes only digits, to '*', and shows
 * exactly the last `visible` of them; partial() is exactly the first
 * `prefix` characters, the padding and the last `suffix` characters, never
 * showing one character twice.  With a hostile callback (returning 0,
 * negative or overlong lengths) only the bounds are checked.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

/* character lengths that ignore the bytes: 0, negative, past the end */
static int
hostile_mblen(const unsigned char *s)
{
	return (int) (s[0] % 9) - 3;
}

/* byte offset of character number k (k <= number of characters) */
static size_t
utf8_offset(const char *s, size_t len, size_t k)
{
	size_t		i = 0;

	while (k > 0 && i < len)
	{
		i++;
		while (i < len && ((unsigned char) s[i] & 0xc0) == 0x80)
			i++;
		k--;
	}
	return i;
}

static void
check_mask_phone(const char *in, size_t len, int visible)
{
	char	   *out = malloc(len + 1);
	size_t		olen = anon_mask_phone(in, len, visible, out);
	size_t		ndigits = 0;
	size_t		shown = 0;
	bool		showing = false;
	size_t		want;

	FUZZ_CHECK(olen == len);
	FUZZ_CHECK(out[len] == '\0');
	for (size_t i = 0; i < len; i++)
	{
		if (in[i] >= '0' && in[i] <= '9')
		{
			ndigits++;
			if (out[i] == in[i])
			{
				shown++;
				showing = true;
			}
			else
			{
				FUZZ_CHECK(out[i] == '*');
				FUZZ_CHECK(!showing);	/* only the last digits show */
			}
		}
		else
			FUZZ_CHECK(out[i] == in[i]);
	}
	want = visible < 0 ? 0 : (size_t) visible;
	if (want > ndigits)
		want = ndigits;
	FUZZ_CHECK(shown == want);
	free(out);
}

/*
 * What mask_email() shows, on valid UTF-8: the last '@' and everything
 * from the last '.' after it; of the part before the '@' and of the
 * domain before that '.', the first character only, and only when the
 * part has more than one.  Every other character becomes one '*'.
 */
static void
check_mask_email_shown(const char *in, size_t len, const char *out,
					   size_t olen)
{
	size_t		at = len;
	size_t		dot = len;
	size_t		i = 0;
	size_t		o = 0;
	size_t		seg_start = 0;

	for (size_t k = 0; k < len; k++)
		if (in[k] == '@')
			at = k;
	if (at < len)
		for (size_t k = at + 1; k < len; k++)
			if (in[k] == '.')
				dot = k;

	while (i < len)
	{
		size_t		n = 1;
		size_t		seg_end;
		bool		keep;

		while (i + n < len && ((unsigned char) in[i + n] & 0xc0) == 0x80)
			n++;
		if (i == at && at < len)
		{
			keep = true;
			seg_start = i + 1;
		}
		else if (at < len && i >= dot)
			keep = true;
		else
		{
			seg_end = (at == len || i < at) ? at : dot;
			/* first character of a part of two or more */
			keep = i == seg_start && seg_end - seg_start > n;
		}
		FUZZ_CHECK(o < olen);
		if (keep)
		{
			FUZZ_CHECK(o + n <= olen && memcmp(out + o, in + i, n) == 0);
			o += n;
		}
		else
			FUZZ_CHECK(out[o++] == '*');
		i += n;
	}
	FUZZ_CHECK(o == olen);
}

static void
check_mask_email(const char *in, size_t len, anon_mblen_fn mblen, bool utf8)
{
	char	   *out = malloc(len + 1);
	size_t		olen = anon_mask_email(in, len, mblen, out);

	FUZZ_CHECK(olen <= len);
	FUZZ_CHECK(out[olen] == '\0');
	if (utf8)
	{
		FUZZ_CHECK(fuzz_valid_utf8(out, olen));
		FUZZ_CHECK(fuzz_utf8_chars(out, olen) == fuzz_utf8_chars(in, len));
		check_mask_email_shown(in, len, out, olen);
	}
	free(out);
}

static void
check_partial(const char *in, size_t len, int prefix, const char *pad,
			  size_t padlen, int suffix, anon_mblen_fn mblen, bool utf8)
{
	char	   *out = malloc(len + padlen + 1);
	size_t		olen = anon_partial(in, len, prefix, pad, padlen, suffix,
									mblen, out);

	FUZZ_CHECK(olen <= len + padlen);
	if (utf8)
	{
		size_t		n = fuzz_utf8_chars(in, len);
		size_t		pre = prefix < 0 ? 0 : (size_t) prefix;
		size_t		suf = suffix < 0 ? 0 : (size_t) suffix;
		size_t		pre_end;
		size_t		suf_start;

		if (pre > n)
			pre = n;
		if (suf > n - pre)
			suf = n - pre;
		pre_end = utf8_offset(in, len, pre);
		suf_start = utf8_offset(in, len, n - suf);
		FUZZ_CHECK(olen == pre_end + padlen + (len - suf_start));
		FUZZ_CHECK(memcmp(out, in, pre_end) == 0);
		FUZZ_CHECK(memcmp(out + pre_end, pad, padlen) == 0);
		FUZZ_CHECK(memcmp(out + pre_end + padlen, in + suf_start,
						  len - suf_start) == 0);
		FUZZ_CHECK(pre_end <= suf_start);
	}
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int			visible;
	int			prefix;
	int			suffix;
	size_t		padlen;
	bool		hostile;
	anon_mblen_fn mblen;
	char	   *pad;
	char	   *in;
	size_t		len;
	bool		utf8;

	if (size < 5)
		return 0;
	visible = (int8_t) data[0];
	prefix = (int8_t) data[1];
	suffix = (int8_t) data[2];
	padlen = data[3] % 16;
	hostile = (data[4] & 1) != 0;
	data += 5;
	size -= 5;
	if (padlen > size)
		padlen = size;
	pad = fuzz_copy(data, padlen);
	in = fuzz_copy(data + padlen, size - padlen);
	len = size - padlen;
	mblen = hostile ? hostile_mblen : anon_utf8_mblen;
	utf8 = !hostile && fuzz_valid_utf8(in, len) &&
		fuzz_valid_utf8(pad, padlen);

	check_mask_phone(in, len, visible);
	check_mask_email(in, len, mblen, utf8);
	check_partial(in, len, prefix, pad, padlen, suffix, mblen, utf8);

	free(in);
	free(pad);
	return 0;
}
