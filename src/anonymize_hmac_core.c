/*-------------------------------------------------------------------------
 *
 * anonymize_hmac_core.c
 *	  SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) with pre-hashed pads.
 *
 * Plain C, like anonymize_normalize_core.c: no postgres.h, no allocation.
 * See anonymize_hmac_core.h for why it exists.
 *
 *-------------------------------------------------------------------------
 */
#include "anonymize_hmac_core.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define ANON_HAVE_SHANI_CODE 1
#endif

static const uint32_t anon_sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

static const uint32_t anon_sha256_h0[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
};

#define ROTR(x, n)	(((x) >> (n)) | ((x) << (32 - (n))))

/* One compression of the 64-byte block into state, in portable C. */
static void
anon_sha256_block_c(uint32_t *state, const uint8_t *block)
{
	uint32_t	w[64];
	uint32_t	a, b, c, d, e, f, g, h;

	for (int i = 0; i < 16; i++)
		w[i] = ((uint32_t) block[4 * i] << 24) |
			((uint32_t) block[4 * i + 1] << 16) |
			((uint32_t) block[4 * i + 2] << 8) |
			(uint32_t) block[4 * i + 3];
	for (int i = 16; i < 64; i++)
	{
		uint32_t	s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t	s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}

	a = state[0];
	b = state[1];
	c = state[2];
	d = state[3];
	e = state[4];
	f = state[5];
	g = state[6];
	h = state[7];
	for (int i = 0; i < 64; i++)
	{
		uint32_t	S1 = ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25);
		uint32_t	ch = (e & f) ^ (~e & g);
		uint32_t	t1 = h + S1 + ch + anon_sha256_k[i] + w[i];
		uint32_t	S0 = ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22);
		uint32_t	maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t	t2 = S0 + maj;

		h = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	state[0] += a;
	state[1] += b;
	state[2] += c;
	state[3] += d;
	state[4] += e;
	state[5] += f;
	state[6] += g;
	state[7] += h;
}

#ifdef ANON_HAVE_SHANI_CODE
/*
 * The same compression with the x86 SHA extensions (SHA-NI), which most
 * servers made since 2017 have: about ten times faster.  The state is kept
 * as the instructions want it (ABEF, CDGH); the message schedule runs four
 * words ahead, W[i % 4] holding words 4i..4i+3.
 */
__attribute__((target("sha,sse4.1,ssse3")))
static void
anon_sha256_block_shani(uint32_t *state, const uint8_t *block)
{
	const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL,
										0x0405060700010203ULL);
	__m128i		st0,
				st1,
				tmp,
				msg,
				abef,
				cdgh;
	__m128i		w[4];

	tmp = _mm_loadu_si128((const __m128i *) &state[0]);
	st1 = _mm_loadu_si128((const __m128i *) &state[4]);
	tmp = _mm_shuffle_epi32(tmp, 0xB1);	/* CDAB */
	st1 = _mm_shuffle_epi32(st1, 0x1B);	/* EFGH */
	st0 = _mm_alignr_epi8(tmp, st1, 8);	/* ABEF */
	st1 = _mm_blend_epi16(st1, tmp, 0xF0);	/* CDGH */
	abef = st0;
	cdgh = st1;

	for (int i = 0; i < 16; i++)
	{
		if (i < 4)
			w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (block + 16 * i)),
									mask);
		msg = _mm_add_epi32(w[i % 4],
							_mm_loadu_si128((const __m128i *) &anon_sha256_k[4 * i]));
		st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
		if (i >= 3 && i <= 14)
		{
			tmp = _mm_alignr_epi8(w[i % 4], w[(i + 3) % 4], 4);
			w[(i + 1) % 4] = _mm_add_epi32(w[(i + 1) % 4], tmp);
			w[(i + 1) % 4] = _mm_sha256msg2_epu32(w[(i + 1) % 4], w[i % 4]);
		}
		msg = _mm_shuffle_epi32(msg, 0x0E);
		st0 = _mm_sha256rnds2_epu32(st0, st1, msg);
		if (i >= 1 && i <= 12)
			w[(i + 3) % 4] = _mm_sha256msg1_epu32(w[(i + 3) % 4], w[i % 4]);
	}

	st0 = _mm_add_epi32(st0, abef);
	st1 = _mm_add_epi32(st1, cdgh);
	tmp = _mm_shuffle_epi32(st0, 0x1B);	/* FEBA */
	st1 = _mm_shuffle_epi32(st1, 0xB1);	/* DCHG */
	st0 = _mm_blend_epi16(tmp, st1, 0xF0);	/* DCBA */
	st1 = _mm_alignr_epi8(st1, tmp, 8);	/* ABEF */
	_mm_storeu_si128((__m128i *) &state[0], st0);
	_mm_storeu_si128((__m128i *) &state[4], st1);
}

/* Does this CPU have the SHA extensions (and SSE4.1, SSSE3)? */
static int
anon_cpu_has_shani(void)
{
	unsigned int a,
				b,
				c,
				d;

	if (!__get_cpuid(1, &a, &b, &c, &d))
		return 0;
	if (!(c & (1u << 19)) || !(c & (1u << 9)))	/* SSE4.1, SSSE3 */
		return 0;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	return (b & (1u << 29)) != 0;	/* SHA */
}
#endif

/* -1 not yet known, 0 portable C, 1 SHA-NI */
static int	anon_use_shani = -1;

/* One SHA-256 block, with SHA-NI where the CPU has it. */
static inline void
anon_sha256_block(uint32_t *state, const uint8_t *block)
{
#ifdef ANON_HAVE_SHANI_CODE
	if (anon_use_shani < 0)
		anon_use_shani = anon_cpu_has_shani();
	if (anon_use_shani)
	{
		anon_sha256_block_shani(state, block);
		return;
	}
#endif
	anon_sha256_block_c(state, block);
}

/* Use the portable C code (tests), or the fastest again. */
void
anon_hmac_force_portable(int portable)
{
#ifdef ANON_HAVE_SHANI_CODE
	anon_use_shani = portable ? 0 : anon_cpu_has_shani();
#endif
}

/*
 * Finish a hash whose state has absorbed `done` bytes in whole blocks:
 * absorb msg[0..len) with the padding (the total length counts done), and
 * write the digest.
 */
static void
anon_sha256_finish(uint32_t *state, uint64_t done, const uint8_t *msg,
				   size_t len, uint8_t *out)
{
	uint8_t		buf[ANON_HMAC_MAX_MSG + 2 * ANON_SHA256_BLOCK];
	size_t		total = len + 1 + 8;
	uint64_t	bits = (done + len) * 8;

	total = (total + ANON_SHA256_BLOCK - 1) / ANON_SHA256_BLOCK * ANON_SHA256_BLOCK;
	memcpy(buf, msg, len);
	buf[len] = 0x80;
	memset(buf + len + 1, 0, total - len - 1);
	for (int i = 0; i < 8; i++)
		buf[total - 1 - i] = (uint8_t) (bits >> (8 * i));
	for (size_t off = 0; off < total; off += ANON_SHA256_BLOCK)
		anon_sha256_block(state, buf + off);
	for (int i = 0; i < 8; i++)
	{
		out[4 * i] = (uint8_t) (state[i] >> 24);
		out[4 * i + 1] = (uint8_t) (state[i] >> 16);
		out[4 * i + 2] = (uint8_t) (state[i] >> 8);
		out[4 * i + 3] = (uint8_t) state[i];
	}
}

/* The HMAC key's inner and outer states, computed once. */
void
anon_hmac_prepare(const uint8_t *key, size_t keylen, anon_hmac_key *pre)
{
	uint8_t		pad[ANON_SHA256_BLOCK];

	memset(pad, 0, sizeof(pad));
	memcpy(pad, key, keylen > sizeof(pad) ? sizeof(pad) : keylen);
	for (int i = 0; i < ANON_SHA256_BLOCK; i++)
		pad[i] ^= 0x36;
	memcpy(pre->inner, anon_sha256_h0, sizeof(pre->inner));
	anon_sha256_block(pre->inner, pad);
	for (int i = 0; i < ANON_SHA256_BLOCK; i++)
		pad[i] ^= 0x36 ^ 0x5c;
	memcpy(pre->outer, anon_sha256_h0, sizeof(pre->outer));
	anon_sha256_block(pre->outer, pad);
	memset(pad, 0, sizeof(pad));
}

/* HMAC-SHA256 of kind ':' msg with a prepared key. */
int
anon_hmac(const anon_hmac_key *pre, char kind, const char *msg, size_t len,
		  uint8_t *out)
{
	uint8_t		buf[ANON_HMAC_MAX_MSG];
	uint8_t		inner[ANON_SHA256_LEN];
	uint32_t	state[8];

	if (len + 2 > ANON_HMAC_MAX_MSG)
		return -1;
	buf[0] = (uint8_t) kind;
	buf[1] = ':';
	memcpy(buf + 2, msg, len);

	memcpy(state, pre->inner, sizeof(state));
	anon_sha256_finish(state, ANON_SHA256_BLOCK, buf, len + 2, inner);
	memcpy(state, pre->outer, sizeof(state));
	anon_sha256_finish(state, ANON_SHA256_BLOCK, inner, sizeof(inner), out);
	return 0;
}
