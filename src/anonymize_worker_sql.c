/*-------------------------------------------------------------------------
 *
 * anonymize_worker_sql.c
 *	  SQL functions of the background worker: wake() asks it to run now,
 *	  status() tells which database it serves, what it is doing, what it
 *	  did last and when it runs next.
 *
 * Both are about the worker of the database they are called in.  wake()
 * wakes it, or asks the launcher for it when it does not run yet.  Both
 * work without shared_preload_libraries: wake() then fails with SQLSTATE
 * 55000 and a hint, status() says "not loaded" and shows the last run
 * recorded in anonymize.worker_state.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "anonymize_settings.h"
#include "anonymize_slots.h"
#include "anonymize_worker.h"

PG_FUNCTION_INFO_V1(anonymize_wake);
PG_FUNCTION_INFO_V1(anonymize_status);

/* wake() where anonymize.database does not serve this database */
static void
anonymize_wake_not_served(void)
{
	bool		all;
	List	   *names = anonymize_database_parse(anonymize_database, &all);

	if (list_length(names) == 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the anonymize background worker serves database \"%s\", not this one",
						strVal(linitial(names))),
				 errhint("Call anonymize.wake() in database \"%s\", or add this database to anonymize.database and reload the configuration.",
						 strVal(linitial(names)))));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("no anonymize background worker serves this database"),
			 errdetail("anonymize.database is \"%s\".", anonymize_database),
			 errhint("Call anonymize.wake() in one of those databases, or add this database to anonymize.database and reload the configuration.")));
}

/* wake(): asks this database's worker to run now */
Datum
anonymize_wake(PG_FUNCTION_ARGS)
{
	if (!anonymize_slots_ready())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the anonymize background worker is not loaded"),
				 errdetail("The worker runs only when the server loads anonymize at start."),
				 errhint("Add anonymize to shared_preload_libraries and restart the server, or call anonymize.run() to run in this session.")));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot wake the anonymize worker on a hot standby"),
				 errhint("Call anonymize.wake() on the primary.")));
	if (!anonymize_database_serves(get_database_name(MyDatabaseId)))
		anonymize_wake_not_served();

	/* the worker's latch, or the launcher's when it has none yet */
	if (!anonymize_slot_request(MyDatabaseId, true))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no slot is free for the anonymize background worker of this database"),
				 errdetail("There is one slot per background worker (max_worker_processes), and every one serves another database."),
				 errhint("Raise max_worker_processes and restart the server, or serve fewer databases.")));
	PG_RETURN_VOID();
}

#define STATUS_COLS 17

/* columns of status(), in order */
enum
{
	st_worker_pid,
	st_worker_state,
	st_database,
	st_enabled,
	st_run_at,
	st_next_run,
	st_wake_pending,
	st_activity,
	st_last_trigger,
	st_last_started,
	st_last_finished,
	st_last_outcome,
	st_last_requests_done,
	st_last_requests_held,
	st_last_requests_failed,
	st_last_rows_rewritten,
	st_worker_database
};

/* the last run recorded in anonymize.worker_state, if any */
static void
anonymize_status_from_table(Datum *values, bool *nulls)
{
	int			i;

	SPI_connect();
	if (SPI_execute("SELECT last_trigger, last_started, last_finished,"
					" CASE last_outcome WHEN 'running' THEN 'unfinished'"
					" ELSE last_outcome END,"
					" last_requests_done, last_requests_held,"
					" last_requests_failed, last_rows_rewritten"
					" FROM anonymize.worker_state", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		for (i = 0; i < 8; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, i + 1, &isnull);

			nulls[st_last_trigger + i] = isnull;
			if (!isnull)
				values[st_last_trigger + i] =
					SPI_datumTransfer(d, i == 0 || i == 3 ? false : true,
									  i == 0 || i == 3 ? -1 : 8);
		}
	}
	SPI_finish();
}

/* a copy of this database's slot; all zero (not running) when it has none */
static void
anonymize_status_slot(AnonymizeWorkerShared *copy)
{
	AnonymizeWorkerShared *s = anonymize_slot_find(MyDatabaseId);

	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	if (s->dboid == MyDatabaseId)
		memcpy(copy, s, sizeof(*copy));
	SpinLockRelease(&s->mutex);
}

/* status(): this database's worker, its schedule and its last run */
Datum
anonymize_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	char	   *here = get_database_name(MyDatabaseId);
	bool		served = anonymize_database_serves(here);
	Datum		values[STATUS_COLS];
	bool		nulls[STATUS_COLS];
	int			i;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	for (i = 0; i < STATUS_COLS; i++)
	{
		values[i] = (Datum) 0;
		nulls[i] = true;
	}

	values[st_database] = CStringGetTextDatum(anonymize_database);
	nulls[st_database] = false;
	values[st_enabled] = BoolGetDatum(anonymize_enabled);
	nulls[st_enabled] = false;
	values[st_run_at] = CStringGetTextDatum(anonymize_run_at);
	nulls[st_run_at] = false;

	/* (a 1.0 status() has one column less: heap_form_tuple ignores it) */
	if (served && anonymize_slots_ready())
	{
		values[st_worker_database] = CStringGetTextDatum(here);
		nulls[st_worker_database] = false;
	}

	anonymize_status_from_table(values, nulls);

	nulls[st_worker_state] = false;
	if (!anonymize_slots_ready())
		values[st_worker_state] = CStringGetTextDatum("not loaded");
	else if (!served)
		values[st_worker_state] = CStringGetTextDatum("not served");
	else
	{
		AnonymizeWorkerShared copy;

		memset(&copy, 0, sizeof(copy));
		anonymize_status_slot(&copy);
		values[st_worker_state] =
			CStringGetTextDatum(anonymize_worker_state_name(copy.state));
		values[st_wake_pending] = BoolGetDatum(copy.wake_requested);
		nulls[st_wake_pending] = false;
		if (copy.pid != 0)
		{
			const char *activity;

			values[st_worker_pid] = Int32GetDatum(copy.pid);
			nulls[st_worker_pid] = false;
			activity = pgstat_get_backend_current_activity(copy.pid, false);
			if (activity)
			{
				values[st_activity] = CStringGetTextDatum(activity);
				nulls[st_activity] = false;
			}
		}
		if (copy.next_run != 0)
		{
			values[st_next_run] = TimestampTzGetDatum(copy.next_run);
			nulls[st_next_run] = false;
		}

		/* the worker's own memory is newer than the table while it runs */
		if (copy.last_started != 0 &&
			(nulls[st_last_started] ||
			 copy.last_started >= DatumGetTimestampTz(values[st_last_started])))
		{
			values[st_last_trigger] = CStringGetTextDatum(copy.last_trigger);
			values[st_last_started] = TimestampTzGetDatum(copy.last_started);
			values[st_last_outcome] = CStringGetTextDatum(copy.last_outcome);
			values[st_last_finished] = TimestampTzGetDatum(copy.last_finished);
			values[st_last_requests_done] = Int64GetDatum(copy.last_requests_done);
			values[st_last_requests_held] = Int64GetDatum(copy.last_requests_held);
			values[st_last_requests_failed] = Int64GetDatum(copy.last_requests_failed);
			values[st_last_rows_rewritten] = Int64GetDatum(copy.last_rows_rewritten);
			for (i = st_last_trigger; i <= st_last_rows_rewritten; i++)
				nulls[i] = false;
			if (copy.last_finished == 0)
			{
				nulls[st_last_finished] = true;
				for (i = st_last_requests_done; i <= st_last_rows_rewritten; i++)
					nulls[i] = true;
			}
		}
	}

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
