/*-------------------------------------------------------------------------
 *
 * anonymize_mask.c
 *	  SQL functions mask_phone(), mask_email() and partial().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "anonymize_compat.h"
#include "anonymize_core.h"

PG_FUNCTION_INFO_V1(anonymize_mask_phone);
PG_FUNCTION_INFO_V1(anonymize_mask_email);
PG_FUNCTION_INFO_V1(anonymize_partial);

/* character length in the database encoding, for the core's callback */
static int
mask_db_mblen(const unsigned char *s)
{
	return pg_mblen((const char *) s);
}

/* mask_phone(text, visible int default 2) */
Datum
anonymize_mask_phone(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	int32		visible = PG_GETARG_INT32(1);
	size_t		len = VARSIZE_ANY_EXHDR(in);
	char	   *out;

	if (visible < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true),
				 errmsg("number of visible digits must not be negative"),
				 errhint("Pass 0 to mask every digit.")));
	out = palloc(len + 1);
	len = anon_mask_phone(VARDATA_ANY(in), len, visible, out);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out, len));
}

/* mask_email(text) */
Datum
anonymize_mask_email(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	size_t		len = VARSIZE_ANY_EXHDR(in);
	char	   *out = palloc(len + 1);

	len = anon_mask_email(VARDATA_ANY(in), len, mask_db_mblen, out);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out, len));
}

/* partial(text, prefix int, padding text, suffix int) */
Datum
anonymize_partial(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	int32		prefix = PG_GETARG_INT32(1);
	text	   *padding = PG_GETARG_TEXT_PP(2);
	int32		suffix = PG_GETARG_INT32(3);
	size_t		len = VARSIZE_ANY_EXHDR(in);
	size_t		padlen = VARSIZE_ANY_EXHDR(padding);
	char	   *out;

	if (prefix < 0 || suffix < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true),
				 errmsg("prefix and suffix lengths must not be negative"),
				 errhint("Pass 0 to show no characters at that end.")));
	out = palloc(len + padlen + 1);
	len = anon_partial(VARDATA_ANY(in), len, prefix, VARDATA_ANY(padding),
					   padlen, suffix, mask_db_mblen, out);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out, len));
}
