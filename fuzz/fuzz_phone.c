/*-------------------------------------------------------------------------
 *
 * fuzz_phone.c
 *	  libFuzzer harness for anon_phone_canonical().
 *
 * The first input byte picks the settings (country code and trunk prefix,
 * from values the GUC checks accept); the rest is the number.  Properties:
 * the canonical form is '+' and 1 to 15 digits; it uses no digit the input
 * does not have, in the same order; strict acceptance implies lenient
 * acceptance with the same output; normalizing the canonical form again
 * gives it back, in both modes; a rejected number leaves an empty output.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

static const char *const countries[] = {"", "47", "46", "44", "1", "358", "999"};
static const char *const trunks[] = {"", "0", "00", "8", "06"};

#define NCOUNTRIES (sizeof(countries) / sizeof(countries[0]))
#define NTRUNKS (sizeof(trunks) / sizeof(trunks[0]))

static void
check_canonical(const char *out)
{
	size_t		n = strlen(out);

	FUZZ_CHECK(n >= 2 && n <= ANON_PHONE_MAX_DIGITS + 1);
	FUZZ_CHECK(out[0] == '+');
	for (size_t i = 1; i < n; i++)
		FUZZ_CHECK(out[i] >= '0' && out[i] <= '9');
	FUZZ_CHECK(out[1] != '0');
}

/*
 * The canonical digits are the input's digits, after dropping a leading
 * 00, or the country code and the input's digits less a trunk prefix.
 */
static void
check_digits(const char *in, size_t len, const char *out,
			 const char *cc, const char *tp)
{
	char		d[64];
	size_t		nd = 0;
	char		dz[64];
	size_t		ndz = 0;
	long		zero_at = -1;
	const char *c = out + 1;
	size_t		nc = strlen(c);
	size_t		cclen = strlen(cc);
	size_t		tplen = strlen(tp);
	bool		ok = false;

	for (size_t i = 0; i < len; i++)
	{
		if (in[i] == '(' && i + 2 < len && in[i + 1] == '0' &&
			in[i + 2] == ')' && zero_at < 0)
			zero_at = (long) nd;
		if (in[i] >= '0' && in[i] <= '9')
		{
			if (nd == sizeof(d))
				return;			/* accepted inputs have few digits */
			d[nd++] = in[i];
		}
	}

	/* the same digits without the first "(0)" (a dropped trunk prefix) */
	if (zero_at >= 0)
	{
		memcpy(dz, d, (size_t) zero_at);
		memcpy(dz + zero_at, d + zero_at + 1, nd - (size_t) zero_at - 1);
		ndz = nd - 1;
	}

	if (nc == nd && memcmp(c, d, nd) == 0)
		ok = true;				/* +... */
	else if (nd >= 2 && d[0] == '0' && d[1] == '0' &&
			 nc == nd - 2 && memcmp(c, d + 2, nc) == 0)
		ok = true;				/* 00... */
	else if (zero_at >= 1 && nc == ndz && memcmp(c, dz, ndz) == 0)
		ok = true;				/* +cc (0)... */
	else if (zero_at >= 3 && ndz >= 2 && dz[0] == '0' && dz[1] == '0' &&
			 nc == ndz - 2 && memcmp(c, dz + 2, nc) == 0)
		ok = true;				/* 00cc (0)... */
	else if (cclen > 0 && nc > cclen && memcmp(c, cc, cclen) == 0)
	{
		const char *nat = c + cclen;
		size_t		nn = nc - cclen;

		if (nn == nd && memcmp(nat, d, nd) == 0)
			ok = true;			/* national */
		else if (tplen > 0 && nd == nn + tplen &&
				 memcmp(d, tp, tplen) == 0 &&
				 memcmp(d + tplen, nat, nn) == 0)
			ok = true;			/* national with trunk prefix */
	}
	FUZZ_CHECK(ok);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *cc;
	const char *tp;
	char	   *in;
	size_t		len;
	char	   *strict_out;
	char	   *lenient_out;
	char	   *again;
	anon_phone_status st_strict;
	anon_phone_status st_lenient;

	if (size < 1)
		return 0;
	cc = countries[data[0] % NCOUNTRIES];
	tp = trunks[(data[0] / NCOUNTRIES) % NTRUNKS];
	len = size - 1;
	in = fuzz_copy(data + 1, len);
	strict_out = malloc(ANON_PHONE_CANON_SIZE);
	lenient_out = malloc(ANON_PHONE_CANON_SIZE);
	again = malloc(ANON_PHONE_CANON_SIZE);

	st_strict = anon_phone_canonical(in, len, false, cc, tp, strict_out);
	st_lenient = anon_phone_canonical(in, len, true, cc, tp, lenient_out);

	if (st_strict == ANON_PHONE_OK)
	{
		check_canonical(strict_out);
		check_digits(in, len, strict_out, cc, tp);
		FUZZ_CHECK(st_lenient == ANON_PHONE_OK);
		FUZZ_CHECK(strcmp(strict_out, lenient_out) == 0);
	}
	else
		FUZZ_CHECK(strict_out[0] == '\0');

	if (st_lenient == ANON_PHONE_OK)
	{
		check_canonical(lenient_out);
		/* idempotent, whatever the settings */
		for (size_t k = 0; k < NCOUNTRIES * NTRUNKS; k++)
		{
			const char *cc2 = countries[k % NCOUNTRIES];
			const char *tp2 = trunks[k / NCOUNTRIES];

			FUZZ_CHECK(anon_phone_canonical(lenient_out, strlen(lenient_out),
											false, cc2, tp2, again) == ANON_PHONE_OK);
			FUZZ_CHECK(strcmp(again, lenient_out) == 0);
		}
	}
	else
		FUZZ_CHECK(lenient_out[0] == '\0');

	free(again);
	free(lenient_out);
	free(strict_out);
	free(in);
	return 0;
}
