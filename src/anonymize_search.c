/*-------------------------------------------------------------------------
 *
 * anonymize_search.c
 *	  The archive search hooks: is_anonymized(), and the function behind the
 *	  row-level-security guard that protect() puts on a target table.
 *
 * Both look values up in the per-backend cache (anonymize_search_cache.h),
 * which reads the page, the digests and the key without privilege checks:
 * the caller needs EXECUTE on the function and nothing else, and cannot
 * read the key or the page through it.  Neither raises for any value.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/timestamp.h"

#include "anonymize_compat.h"
#include "anonymize_search_cache.h"
#include "anonymize_settings.h"

PG_FUNCTION_INFO_V1(anonymize_is_anonymized);
PG_FUNCTION_INFO_V1(anonymize_guard_visible_date);
PG_FUNCTION_INFO_V1(anonymize_guard_visible_timestamp);
PG_FUNCTION_INFO_V1(anonymize_guard_visible_timestamptz);
PG_FUNCTION_INFO_V1(anonymize_search_cache_entries);

/*
 * is_anonymized(identifier text) returns boolean, STRICT: the value, as a
 * phone number or an email address, belongs to an archive request that is
 * Waiting, Running, Held or Done.
 */
Datum
anonymize_is_anonymized(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	AnonymizeSearchHit hit;

	if (!anonymize_search_lookup(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t),
								 ANONYMIZE_SEARCH_ANY, &hit))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(hit.done || hit.pending[ANONYMIZE_SCOPE_ARCHIVE]);
}

/* The scope argument of the guard: 'a'rchive, 's'ms_survey, 'r'aw_data. */
static AnonymizeScope
search_guard_scope(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(2))
		return ANONYMIZE_SCOPE_ARCHIVE;
	switch (PG_GETARG_CHAR(2))
	{
		case 's':
			return ANONYMIZE_SCOPE_SMS_SURVEY;
		case 'r':
			return ANONYMIZE_SCOPE_RAW_DATA;
		default:
			return ANONYMIZE_SCOPE_ARCHIVE;
	}
}

/* The kind argument of the guard: 'p'hone, 'e'mail, 'b'oth. */
static int
search_guard_kinds(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(3))
		return ANONYMIZE_SEARCH_ANY;
	switch (PG_GETARG_CHAR(3))
	{
		case 'p':
			return ANONYMIZE_SEARCH_PHONE;
		case 'e':
			return ANONYMIZE_SEARCH_EMAIL;
		default:
			return ANONYMIZE_SEARCH_ANY;
	}
}

/*
 * The common part of the guard: the latest to_date of a pending request in
 * the scope naming the value in argument 0, or false when there is none
 * (or the value is NULL).  The callers hide a row of NULL time that a
 * pending request names: the run erases it.
 */
static bool
search_guard_pending(FunctionCallInfo fcinfo, DateADT *to_date)
{
	text	   *t;

	if (PG_ARGISNULL(0))
		return false;
	t = PG_GETARG_TEXT_PP(0);
	return anonymize_search_pending(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t),
									search_guard_kinds(fcinfo), search_guard_scope(fcinfo),
									to_date);
}

/*
 * _guard_visible(value text, at date|timestamp|timestamptz, scope "char",
 * kind "char") returns boolean: false for a row the run will rewrite (its
 * value, read as the target's kind, names a request of the scope that is
 * not Done yet, and at is on or before the request's to_date in
 * anonymize.timezone, or at is NULL: the run erases a row of unknown time),
 * true for every other row.
 */
Datum
anonymize_guard_visible_date(PG_FUNCTION_ARGS)
{
	DateADT		to_date;

	if (!search_guard_pending(fcinfo, &to_date))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(PG_GETARG_DATEADT(1) > to_date);
}

/* a timestamp without time zone is a wall-clock time: its date counts */
Datum
anonymize_guard_visible_timestamp(PG_FUNCTION_ARGS)
{
	DateADT		to_date;
	Timestamp	at;
	Timestamp	end;
	int			overflow = 0;

	if (!search_guard_pending(fcinfo, &to_date))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	at = PG_GETARG_TIMESTAMP(1);
	if (DATE_IS_NOBEGIN(to_date))
		PG_RETURN_BOOL(true);
	if (DATE_IS_NOEND(to_date) || to_date >= DATEVAL_NOEND - 1)
		PG_RETURN_BOOL(false);
	end = date2timestamp_opt_overflow(to_date + 1, &overflow);
	if (overflow > 0)
		PG_RETURN_BOOL(false);
	if (overflow < 0)
		PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(at >= end);
}

/* a timestamptz is on or before to_date when before that day ends */
Datum
anonymize_guard_visible_timestamptz(PG_FUNCTION_ARGS)
{
	DateADT		to_date;

	if (!search_guard_pending(fcinfo, &to_date))
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(PG_GETARG_TIMESTAMPTZ(1) >= anonymize_date_end(to_date));
}

/* _search_cache_entries(): distinct digests in this backend's cache */
Datum
anonymize_search_cache_entries(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(anonymize_search_cache_size());
}
