/*-------------------------------------------------------------------------
 *
 * fuzz_common.h
 *	  Shared by the libFuzzer harnesses of the anonymize pure core.
 *
 * FUZZ_CHECK() aborts on a broken property, so that libFuzzer reports it
 * like a crash and keeps the input that broke it.  Buffers are heap
 * copies of exactly the size the core's contract promises, so that
 * AddressSanitizer sees any read or write one byte past them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anonymize_core.h"

#define FUZZ_CHECK(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "property broken at %s:%d: %s\n", \
					__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* a heap copy of data[0..len), exactly len bytes (no terminator) */
static inline char *
fuzz_copy(const uint8_t *data, size_t len)
{
	char	   *p = malloc(len ? len : 1);

	FUZZ_CHECK(p != NULL);
	if (len)
		memcpy(p, data, len);
	return p;
}

/* Is s[0..len) valid UTF-8 (what a UTF-8 database hands the functions)? */
static inline bool
fuzz_valid_utf8(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *) s;
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = u[i];
		size_t		n;
		uint32_t	cp;

		if (c == 0)
			return false;		/* text never holds NUL */
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			n = 2, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			n = 3, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			n = 4, cp = c & 0x07;
		else
			return false;
		if (i + n > len)
			return false;
		for (size_t k = 1; k < n; k++)
		{
			if ((u[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (u[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
			(n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
			(cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

/* number of UTF-8 characters in a valid UTF-8 string */
static inline size_t
fuzz_utf8_chars(const char *s, size_t len)
{
	size_t		n = 0;

	for (size_t i = 0; i < len; i++)
		if (((unsigned char) s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

#endif							/* FUZZ_COMMON_H */
