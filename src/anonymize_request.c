/*-------------------------------------------------------------------------
 *
 * anonymize_request.c
 *	  The rules of the Anonymize page, enforced by a row trigger on
 *	  anonymize.anonymize_request so that they hold for plain INSERT, UPDATE,
 *	  DELETE and COPY from the portal, not only for our functions.
 *
 * The portal may:
 *	  - insert a Waiting row with a valid phone and/or email, a to_date not
 *		after today in anonymize.timezone, and at least one scope;
 *	  - change or delete (cancel) a row while it is Waiting.
 * It may not set status, done_at, rows_anonymized or error (42501), nor
 * touch a row that is no longer Waiting (55000).  The run, confirm() and
 * retention write through anonymize_internal_write_begin().
 *
 * A superuser may insert rows in any state: that is what a restore of a
 * dump does.  Every status change is written to anonymize.request_log.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "anonymize_normalize.h"
#include "anonymize_request.h"
#include "anonymize_settings.h"

PG_FUNCTION_INFO_V1(anonymize_request_guard);
PG_FUNCTION_INFO_V1(anonymize_request_forbid_truncate);
PG_FUNCTION_INFO_V1(anonymize_today_sql);

static int	internal_write_depth = 0;
static bool xact_callback_registered = false;

/* The end of a transaction ends its internal writes. */
static void
request_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT)
		internal_write_depth = 0;
}

/* The extension's own writes to the page begin. */
void
anonymize_internal_write_begin(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(request_xact_callback, NULL);
		xact_callback_registered = true;
	}
	internal_write_depth++;
}

/* The extension's own writes to the page end. */
void
anonymize_internal_write_end(void)
{
	if (internal_write_depth > 0)
		internal_write_depth--;
}

/* Is the extension writing to the page itself? */
bool
anonymize_internal_write_active(void)
{
	return internal_write_depth > 0;
}

/* The OIDs of the schema, the page and request_private. */
void
anonymize_request_relids(Oid *nsp, Oid *page, Oid *private)
{
	*nsp = get_namespace_oid("anonymize", false);
	*page = get_relname_relid("anonymize_request", *nsp);
	*private = get_relname_relid("request_private", *nsp);
}

/* The text label of a request_status datum. */
static char *
request_status_label(Datum d)
{
	return DatumGetCString(DirectFunctionCall1(enum_out, d));
}

/* Has the row this status? */
static bool
request_status_is(HeapTuple tup, TupleDesc desc, const char *label)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, Anum_request_status, desc, &isnull);

	return !isnull && strcmp(request_status_label(d), label) == 0;
}

/* A text column that is NULL or only white space counts as not given. */
static bool
request_text_is_blank(HeapTuple tup, TupleDesc desc, int attnum)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, attnum, desc, &isnull);
	text	   *t;
	const char *p;
	int			len;

	if (isnull)
		return true;
	t = DatumGetTextPP(d);
	p = VARDATA_ANY(t);
	len = VARSIZE_ANY_EXHDR(t);
	for (int i = 0; i < len; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
			return false;
	return true;
}

/* The run's own columns must stay as they are (NULL on insert). */
static void
request_check_run_columns(HeapTuple newtup, HeapTuple oldtup, TupleDesc desc)
{
	static const int cols[] = {Anum_request_done_at,
		Anum_request_rows_anonymized,
	Anum_request_error};

	if (!request_status_is(newtup, desc, "Waiting"))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errhidestmt(true),
				 errmsg("status of an anonymize request is set by the erasure run"),
				 errdetail("A request is filed as Waiting; the run moves it on."),
				 errhint("Leave status out of the INSERT or UPDATE; use anonymize.confirm() to release a Held request.")));

	for (int i = 0; i < lengthof(cols); i++)
	{
		bool		isnull;

		(void) heap_getattr(newtup, cols[i], desc, &isnull);
		if (!isnull)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errhidestmt(true),
					 errmsg("column \"%s\" of an anonymize request is set by the erasure run",
							NameStr(TupleDescAttr(desc, cols[i] - 1)->attname)),
					 errhint("Leave done_at, rows_anonymized and error out of the INSERT or UPDATE.")));
	}

	if (oldtup != NULL)
	{
		bool		n1,
					n2;
		Datum		a = heap_getattr(newtup, Anum_request_id, desc, &n1);
		Datum		b = heap_getattr(oldtup, Anum_request_id, desc, &n2);

		if (DatumGetInt64(a) != DatumGetInt64(b))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errhidestmt(true),
					 errmsg("the id of an anonymize request cannot be changed"),
					 errhint("Delete the Waiting request and add a new one.")));
	}
}

/* The row must still be Waiting for the portal to change or delete it. */
static void
request_check_still_waiting(HeapTuple oldtup, TupleDesc desc, const char *action)
{
	bool		isnull;
	Datum		id = heap_getattr(oldtup, Anum_request_id, desc, &isnull);
	Datum		st = heap_getattr(oldtup, Anum_request_status, desc, &isnull);

	if (!request_status_is(oldtup, desc, "Waiting"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errhidestmt(true),
				 errmsg("anonymize request %lld is %s and cannot be %s",
						(long long) DatumGetInt64(id), request_status_label(st), action),
				 errdetail("Only a Waiting request can be changed or cancelled."),
				 errhint("A Held request is released with anonymize.confirm(); a Running, Done or Failed one is kept as the record of the erasure.")));
}

/*
 * The table's NOT NULL and CHECK constraints, checked here first: their
 * own errors print the failing row, identifiers included, into the server
 * log.  Ours name the rule only.  (The constraints stay as a backstop.)
 */
static void
request_check_row_shape(HeapTuple tup, TupleDesc desc, bool to_date_may_be_null)
{
	bool		isnull;
	bool		any_scope = false;
	static const int scopes[] = {Anum_request_archive, Anum_request_sms_survey,
	Anum_request_raw_data};

	if (request_text_is_blank(tup, desc, Anum_request_phone) &&
		request_text_is_blank(tup, desc, Anum_request_email))
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errhidestmt(true), errhidecontext(true),
				 errmsg("an anonymize request needs a phone number or an email address"),
				 errhint("Fill in the phone number, the email address, or both.")));

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || !att->attnotnull)
			continue;
		if (att->attnum == Anum_request_to_date && to_date_may_be_null)
			continue;
		(void) heap_getattr(tup, att->attnum, desc, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errhidestmt(true), errhidecontext(true),
					 errmsg("column \"%s\" of an anonymize request must not be null",
							NameStr(att->attname))));
	}

	for (int i = 0; i < lengthof(scopes); i++)
	{
		Datum		d = heap_getattr(tup, scopes[i], desc, &isnull);

		if (DatumGetBool(d))
			any_scope = true;
	}
	if (!any_scope)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errhidestmt(true), errhidecontext(true),
				 errmsg("an anonymize request needs at least one scope"),
				 errhint("Tick archive, sms_survey or raw_data.")));
}

/*
 * Validate identifiers and the date of a row the portal writes, blank
 * identifiers becoming NULL.  On INSERT (fill_to_date) a NULL to_date
 * becomes today in anonymize.timezone: the column's default, computed here
 * so that the portal's role needs no grant on a function for it.  Returns
 * the (possibly new) tuple.
 */
static HeapTuple
request_validate_row(HeapTuple tup, Relation rel, bool fill_to_date)
{
	TupleDesc	desc = RelationGetDescr(rel);
	static const int cols[] = {Anum_request_phone, Anum_request_email};
	bool	   *replace = palloc0(desc->natts * sizeof(bool));
	Datum	   *values = palloc0(desc->natts * sizeof(Datum));
	bool	   *nulls = palloc(desc->natts * sizeof(bool));
	bool		changed = false;
	bool		isnull;
	Datum		d;

	memset(nulls, true, desc->natts * sizeof(bool));
	for (int i = 0; i < lengthof(cols); i++)
	{
		text	   *t;

		d = heap_getattr(tup, cols[i], desc, &isnull);
		if (request_text_is_blank(tup, desc, cols[i]))
		{
			/* '' or blanks from an empty form field: store NULL */
			if (!isnull)
				replace[cols[i] - 1] = changed = true;
			continue;
		}
		t = DatumGetTextPP(d);
		if (cols[i] == Anum_request_phone)
		{
			char		canon[ANON_PHONE_CANON_SIZE];

			anonymize_phone_canonical(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t),
									  false, true, canon);
		}
		else
			pfree(anonymize_email_canonical(VARDATA_ANY(t),
											VARSIZE_ANY_EXHDR(t),
											false, true));
	}

	request_check_row_shape(tup, desc, fill_to_date);

	d = heap_getattr(tup, Anum_request_to_date, desc, &isnull);
	if (isnull && fill_to_date)
	{
		/* the column's default: today in anonymize.timezone */
		replace[Anum_request_to_date - 1] = changed = true;
		values[Anum_request_to_date - 1] = DateADTGetDatum(anonymize_today());
		nulls[Anum_request_to_date - 1] = false;
	}
	else if (!isnull && DatumGetDateADT(d) > anonymize_today())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errhidestmt(true), errhidecontext(true),
				 errmsg("to_date of an anonymize request must not be after today"),
				 errdetail("Contacts made after the request is filed are not anonymized."),
				 errhint("Enter today's date or an earlier one; today is taken in anonymize.timezone.")));

	if (changed)
		tup = heap_modify_tuple(tup, desc, values, nulls, replace);
	return tup;
}

/*
 * Was the row created now, by this transaction (created_at left to its
 * default)?  A row a dump brings back keeps its original created_at: a
 * superuser inserting a Waiting row created earlier is a restore, and its
 * receipts come with the dump.  Writing a new "Waiting" receipt for it
 * would collide with the restored receipt ids and make pg_restore drop
 * every receipt (t/060_dump_restore.pl).
 */
static bool
request_created_in_this_xact(HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, Anum_request_created_at, desc, &isnull);

	return isnull ||
		DatumGetTimestampTz(d) == GetCurrentTransactionStartTimestamp();
}

/* Write a status change to anonymize.request_log. */
static void
request_log_status(int64 request_id, const char *event, const char *status)
{
	Oid			argtypes[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', status ? ' ' : 'n'};
	int			ret;

	values[0] = Int64GetDatum(request_id);
	values[1] = CStringGetTextDatum(event);
	values[2] = status ? CStringGetTextDatum(status) : (Datum) 0;

	SPI_connect();
	ret = SPI_execute_with_args("INSERT INTO anonymize.request_log "
								"(request_id, event, status) "
								"VALUES ($1, $2, $3::anonymize.request_status)",
								3, argtypes, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not write anonymize.request_log: %d", ret);
	SPI_finish();
}

/*
 * BEFORE INSERT OR UPDATE OR DELETE FOR EACH ROW on the page.
 *
 * Declared SECURITY DEFINER so that it can write the log; who acts is
 * therefore GetOuterUserId(), not GetUserId().
 */
Datum
anonymize_request_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newtup = NULL;
	HeapTuple	oldtup = NULL;
	bool		isnull;
	bool		internal = anonymize_internal_write_active();

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "anonymize_request_guard: not called as a BEFORE ROW trigger");

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	if (desc->natts < Anum_request_error)
		elog(ERROR, "anonymize_request_guard: unexpected shape of %s",
			 RelationGetRelationName(rel));

	/* is_anonymized() caches the page: tell every backend it changed */
	CacheInvalidateRelcache(rel);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		newtup = trigdata->tg_trigtuple;
		if (!internal)
		{
			bool		restoring = superuser_arg(GetOuterUserId()) &&
				(!request_status_is(newtup, desc, "Waiting") ||
				 !request_created_in_this_xact(newtup, desc));

			if (restoring)
				request_check_row_shape(newtup, desc, false);
			else
			{
				request_check_run_columns(newtup, NULL, desc);
				newtup = request_validate_row(newtup, rel, true);
				request_log_status(DatumGetInt64(heap_getattr(newtup, Anum_request_id,
															  desc, &isnull)),
								   "status", "Waiting");
			}
		}
		return PointerGetDatum(newtup);
	}

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		oldtup = trigdata->tg_trigtuple;
		newtup = trigdata->tg_newtuple;
		if (!internal)
		{
			request_check_still_waiting(oldtup, desc, "changed");
			request_check_run_columns(newtup, oldtup, desc);
			newtup = request_validate_row(newtup, rel, false);
		}
		return PointerGetDatum(newtup);
	}

	/* DELETE: cancels a Waiting request */
	oldtup = trigdata->tg_trigtuple;
	if (!internal)
	{
		request_check_still_waiting(oldtup, desc, "deleted");
		request_log_status(DatumGetInt64(heap_getattr(oldtup, Anum_request_id, desc,
													  &isnull)),
						   "cancelled", NULL);
	}
	return PointerGetDatum(oldtup);
}

/* BEFORE TRUNCATE: the page is the record of erasures, not a scratch table */
Datum
anonymize_request_forbid_truncate(PG_FUNCTION_ARGS)
{
	if (!anonymize_internal_write_active())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the anonymize request page cannot be truncated"),
				 errhint("Delete Waiting requests one by one; Done requests are purged by anonymize.request_retention.")));
	PG_RETURN_POINTER(NULL);
}

/* anonymize._today(): today's date in anonymize.timezone, the page's default */
Datum
anonymize_today_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_DATEADT(anonymize_today());
}
