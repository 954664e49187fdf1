/*-------------------------------------------------------------------------
 *
 * anonymize_normalize.c
 *	  SQL functions normalize_phone() and normalize_email(), the index
 *	  function canonical_phone(), and the server-side wrappers every other
 *	  part uses to get canonical forms.
 *
 * Errors say what is wrong with a value, never the value: the text of an
 * error reaches the server log, and an identifier must not.  For the same
 * reason they hide the statement and the context (a COPY line, say) from
 * the server log; the client still gets them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "anonymize_compat.h"
#include "anonymize_engine.h"
#include "anonymize_normalize.h"
#include "anonymize_settings.h"

PG_FUNCTION_INFO_V1(anonymize_normalize_phone);
PG_FUNCTION_INFO_V1(anonymize_normalize_email);
PG_FUNCTION_INFO_V1(anonymize_canonical_phone);

/* The errdetail of an invalid phone number. */
static const char *
normalize_phone_detail(anon_phone_status st)
{
	switch (st)
	{
		case ANON_PHONE_EMPTY:
			return "The phone number has no digits.";
		case ANON_PHONE_BAD_CHAR:
			return "The phone number contains a character that is not a digit, a leading + or a separator.";
		case ANON_PHONE_LONE_PLUS:
			return "The phone number has no digits after + or 00.";
		case ANON_PHONE_SHORT_NATIONAL:
			return "A national phone number needs at least 3 digits.";
		case ANON_PHONE_SHORT_INTL:
			return "A foreign phone number needs at least 4 digits after 00 or +.";
		case ANON_PHONE_BAD_COUNTRY:
			return "A country code cannot start with 0.";
		case ANON_PHONE_TOO_LONG:
			return "A phone number has at most 15 digits with its country code.";
		case ANON_PHONE_NO_COUNTRY:
		case ANON_PHONE_OK:
			break;
	}
	return NULL;
}

/* A phone number's canonical form (see anonymize_normalize.h). */
bool
anonymize_phone_canonical(const char *s, size_t len, bool lenient,
						  bool raise_error, char *out)
{
	anon_phone_status st;

	st = anon_phone_canonical(s, len, lenient,
							  anonymize_country_code ? anonymize_country_code : "",
							  anonymize_trunk_prefix ? anonymize_trunk_prefix : "",
							  out);
	if (st == ANON_PHONE_OK)
		return true;
	if (!raise_error)
		return false;

	if (st == ANON_PHONE_NO_COUNTRY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true), errhidecontext(true),
				 errmsg("national phone number without a configured country code"),
				 errdetail("A number without 00 or + is national, and anonymize.country_code is empty."),
				 errhint("Set anonymize.country_code to the country this solution runs in, for example 47, or enter the number with 00 and its country code.")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errhidestmt(true), errhidecontext(true),
			 errmsg("invalid phone number"),
			 errdetail_internal("%s", normalize_phone_detail(st)),
			 errhint(ANONYMIZE_PHONE_HINT)));
	return false;				/* keep compiler quiet */
}

/* The errdetail of an invalid email address. */
static const char *
normalize_email_detail(anon_email_status st)
{
	switch (st)
	{
		case ANON_EMAIL_EMPTY:
			return "The email address is empty.";
		case ANON_EMAIL_NO_AT:
			return "An email address has exactly one @.";
		case ANON_EMAIL_BAD_CHAR:
			return "The email address contains a space, control character or character not allowed in an address.";
		case ANON_EMAIL_BAD_LOCAL:
			return "The part before @ is empty or malformed.";
		case ANON_EMAIL_BAD_DOMAIN:
			return "The part after @ is not a domain name such as example.com.";
		case ANON_EMAIL_BAD_BRACKETS:
			return "The address in angle brackets is not closed.";
		case ANON_EMAIL_TOO_LONG:
			return "An email address has at most 254 characters.";
		case ANON_EMAIL_OK:
			break;
	}
	return NULL;
}

/* An email address's canonical form (see anonymize_normalize.h). */
char *
anonymize_email_canonical(const char *s, size_t len, bool lenient,
						  bool raise_error)
{
	char	   *out = palloc(len + 1);
	size_t		outlen;
	anon_email_status st;

	st = anon_email_canonical(s, len, lenient, out, &outlen);
	if (st == ANON_EMAIL_OK)
		return out;
	pfree(out);
	if (!raise_error)
		return NULL;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errhidestmt(true), errhidecontext(true),
			 errmsg("invalid email address"),
			 errdetail_internal("%s", normalize_email_detail(st)),
			 errhint(ANONYMIZE_EMAIL_HINT)));
	return NULL;				/* keep compiler quiet */
}

/* normalize_phone(text) returns text: '+' and digits */
Datum
anonymize_normalize_phone(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	char		out[ANON_PHONE_CANON_SIZE];

	anonymize_phone_canonical(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in),
							  false, true, out);
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/*
 * canonical_phone(value text, country_code text, trunk_prefix text)
 * returns text: the canonical form the run reads in an archive value with
 * these settings, or NULL when it reads none.  IMMUTABLE (the settings
 * are arguments), never an error: an index over it accepts every row.
 */
Datum
anonymize_canonical_phone(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);
	char	   *cc = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *tp = text_to_cstring(PG_GETARG_TEXT_PP(2));
	char		out[ANON_PHONE_CANON_SIZE];

	/* as the run's scan: a long value is never an identifier */
	if (VARSIZE_ANY_EXHDR(in) > ANONYMIZE_MAX_VALUE_LEN ||
		anon_phone_canonical(VARDATA_ANY(in), VARSIZE_ANY_EXHDR(in), true,
							 cc, tp, out) != ANON_PHONE_OK)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* normalize_email(text) returns text: the lower-case address */
Datum
anonymize_normalize_email(PG_FUNCTION_ARGS)
{
	text	   *in = PG_GETARG_TEXT_PP(0);

	PG_RETURN_TEXT_P(cstring_to_text(anonymize_email_canonical(VARDATA_ANY(in),
															   VARSIZE_ANY_EXHDR(in),
															   false, true)));
}
