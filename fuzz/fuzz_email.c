/*-------------------------------------------------------------------------
 *
 * fuzz_email.c
 *	  libFuzzer harness for anon_email_canonical().
 *
 * Properties: an accepted address has one '@', at most 254 bytes, no
 * upper-case ASCII letter, no space or control character, and is a piece
 * of the lower-cased input; strict acceptance implies lenient acceptance
 * with the same output; normalizing it again gives it back.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

static void
check_canonical(const char *out, size_t outlen, const char *in, size_t len)
{
	size_t		ats = 0;
	char	   *lower;
	bool		found = false;

	FUZZ_CHECK(outlen >= 3 && outlen <= ANON_EMAIL_MAX_LEN);
	FUZZ_CHECK(strlen(out) == outlen);
	for (size_t i = 0; i < outlen; i++)
	{
		unsigned char c = (unsigned char) out[i];

		FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
		FUZZ_CHECK(c > 0x20 && c != 0x7f);
		if (c == '@')
			ats++;
	}
	FUZZ_CHECK(ats == 1);
	FUZZ_CHECK(out[0] != '@' && out[outlen - 1] != '@');

	lower = fuzz_copy((const uint8_t *) in, len);
	for (size_t i = 0; i < len; i++)
		if (lower[i] >= 'A' && lower[i] <= 'Z')
			lower[i] += 'a' - 'A';
	for (size_t i = 0; i + outlen <= len && !found; i++)
		found = memcmp(lower + i, out, outlen) == 0;
	free(lower);
	FUZZ_CHECK(found);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *in = fuzz_copy(data, size);
	char	   *strict_out = malloc(size + 1);
	char	   *lenient_out = malloc(size + 1);
	size_t		strict_len;
	size_t		lenient_len;
	anon_email_status st_strict;
	anon_email_status st_lenient;

	st_strict = anon_email_canonical(in, size, false, strict_out, &strict_len);
	st_lenient = anon_email_canonical(in, size, true, lenient_out, &lenient_len);

	if (st_strict == ANON_EMAIL_OK)
	{
		check_canonical(strict_out, strict_len, in, size);
		FUZZ_CHECK(st_lenient == ANON_EMAIL_OK);
		FUZZ_CHECK(lenient_len == strict_len);
		FUZZ_CHECK(memcmp(strict_out, lenient_out, strict_len) == 0);
	}
	else
		FUZZ_CHECK(strict_len == 0 && strict_out[0] == '\0');

	if (st_lenient == ANON_EMAIL_OK)
	{
		char	   *again = malloc(lenient_len + 1);
		size_t		again_len;

		check_canonical(lenient_out, lenient_len, in, size);
		FUZZ_CHECK(anon_email_canonical(lenient_out, lenient_len, false,
										again, &again_len) == ANON_EMAIL_OK);
		FUZZ_CHECK(again_len == lenient_len &&
				   memcmp(again, lenient_out, again_len) == 0);
		free(again);
	}
	else
		FUZZ_CHECK(lenient_len == 0 && lenient_out[0] == '\0');

	free(lenient_out);
	free(strict_out);
	free(in);
	return 0;
}
