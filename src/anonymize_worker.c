/*-------------------------------------------------------------------------
 *
 * anonymize_worker.c
 *	  A database's background worker: runs the erasure every day at
 *	  anonymize.run_at (in anonymize.timezone) and whenever wake() asks.
 *
 * The launcher (anonymize_launcher.c) starts one such worker per database
 * served, as a dynamic background worker with a slot of its own in shared
 * memory (anonymize_slots.c).  On a hot standby the worker idles (checking
 * every few seconds whether the server was promoted) and never writes.
 * Where the extension is missing it idles until CREATE EXTENSION in a
 * database named in anonymize.database, and leaves with "*" (the launcher
 * starts it again once the extension is there).  It leaves at once when a
 * DROP DATABASE or the like holds its database.
 *
 * Scheduled runs survive restarts through the one row of
 * anonymize.worker_state: the last scheduled instant handled (last_slot)
 * and the run started and not yet finished (pending_*).  When the worker
 * (re)starts it first resumes an unfinished run (killed, crashed, shut
 * down), at most ANONYMIZE_WORKER_MAX_ATTEMPTS times, then catches up the
 * latest scheduled run if it was missed.  Changing run_at while the worker
 * is up reschedules; it never runs at once.  With anonymize.enabled = off
 * the scheduled instants are recorded as skipped and only wake() runs.
 *
 * Signals follow src/test/modules/worker_spi: SIGHUP reloads the
 * configuration, SIGTERM ends the worker at the next interrupt check (the
 * run checks for interrupts in its loops), and the launcher starts it
 * again a few seconds later; it exits with the postmaster.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "anonymize_citus.h"
#include "anonymize_run.h"
#include "anonymize_schedule.h"
#include "anonymize_settings.h"
#include "anonymize_slots.h"
#include "anonymize_worker.h"
#include "anonymize_xact.h"

#define ANONYMIZE_WORKER_POLL_MS 10000	/* standby, no extension */
#define ANONYMIZE_WORKER_MAX_SLEEP_MS 60000
#define ANONYMIZE_WORKER_MAX_ATTEMPTS 3

/* this worker's slot */
static AnonymizeWorkerShared *worker_slot = NULL;

/* the row of anonymize.worker_state, as the worker reads it */
typedef struct AnonymizeWorkerRow
{
	bool		found;
	TimestampTz last_slot;		/* 0 when NULL */
	char		pending_trigger[ANONYMIZE_WORKER_TEXTLEN];	/* "" when NULL */
	TimestampTz pending_slot;	/* 0 when NULL */
	int			pending_attempts;
} AnonymizeWorkerRow;

/* the name of a state, as status() shows it */
const char *
anonymize_worker_state_name(AnonymizeWorkerState state)
{
	switch (state)
	{
		case ANONYMIZE_WORKER_NOT_RUNNING:
			return "not running";
		case ANONYMIZE_WORKER_STARTING:
			return "starting";
		case ANONYMIZE_WORKER_NO_EXTENSION:
			return "no extension";
		case ANONYMIZE_WORKER_STANDBY:
			return "standby";
		case ANONYMIZE_WORKER_WAITING:
			return "waiting";
		case ANONYMIZE_WORKER_DISABLED:
			return "disabled";
		case ANONYMIZE_WORKER_RUNNING:
			return "running";
	}
	return "unknown";
}

/* what the worker does now, for status() */
static void
anonymize_worker_set_state(AnonymizeWorkerState state, TimestampTz next_run)
{
	SpinLockAcquire(&worker_slot->mutex);
	worker_slot->state = state;
	worker_slot->next_run = next_run;
	SpinLockRelease(&worker_slot->mutex);
}

/* on exit: no longer reachable; a run cut short is reported as such */
static void
anonymize_worker_on_exit(int code, Datum arg)
{
	AnonymizeWorkerShared *s = worker_slot;

	SpinLockAcquire(&s->mutex);
	if (s->state == ANONYMIZE_WORKER_RUNNING && s->last_finished == 0)
	{
		s->last_finished = GetCurrentTimestamp();
		strlcpy(s->last_outcome, "interrupted", ANONYMIZE_WORKER_TEXTLEN);
	}
	s->pid = 0;
	s->latch = NULL;
	s->state = ANONYMIZE_WORKER_NOT_RUNNING;
	s->next_run = 0;
	SpinLockRelease(&s->mutex);
}

/* ---------------------------------------------------------------------
 * anonymize.worker_state
 * ---------------------------------------------------------------------
 */

/* run one statement in a transaction of its own */
static void
anonymize_worker_sql(const char *sql, int nargs, Oid *types, Datum *values,
					 const char *nulls, AnonymizeWorkerRow *row)
{
	int			ret;

	anonymize_xact_begin();
	ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	if (ret < 0)
		elog(ERROR, "anonymize worker: SPI_execute_with_args failed: %d", ret);
	if (row)
	{
		memset(row, 0, sizeof(*row));
		if (SPI_processed > 0)
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		d;

			row->found = true;
			d = SPI_getbinval(tup, desc, 1, &isnull);
			row->last_slot = isnull ? 0 : DatumGetTimestampTz(d);
			d = SPI_getbinval(tup, desc, 2, &isnull);
			if (!isnull)
				text_to_cstring_buffer(DatumGetTextPP(d), row->pending_trigger,
									   ANONYMIZE_WORKER_TEXTLEN);
			d = SPI_getbinval(tup, desc, 3, &isnull);
			row->pending_slot = isnull ? 0 : DatumGetTimestampTz(d);
			d = SPI_getbinval(tup, desc, 4, &isnull);
			row->pending_attempts = isnull ? 0 : DatumGetInt32(d);
		}
	}
	anonymize_xact_commit();
	pgstat_report_stat(false);
}

/* the row of anonymize.worker_state */
static void
anonymize_worker_read_row(AnonymizeWorkerRow *row)
{
	anonymize_worker_sql("SELECT last_slot, pending_trigger, pending_slot, pending_attempts"
						 " FROM anonymize.worker_state",
						 0, NULL, NULL, NULL, row);
}

/* first start in this database: the latest scheduled instant was not missed */
static void
anonymize_worker_baseline(TimestampTz slot)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {TimestampTzGetDatum(slot)};

	anonymize_worker_sql("INSERT INTO anonymize.worker_state AS w (last_slot) VALUES ($1)"
						 " ON CONFLICT (only_row) DO UPDATE"
						 " SET last_slot = coalesce(w.last_slot, excluded.last_slot)",
						 1, types, values, NULL, NULL);
}

/* a scheduled instant passed while anonymize.enabled was off */
static void
anonymize_worker_skip(TimestampTz slot)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {TimestampTzGetDatum(slot)};

	anonymize_worker_sql("UPDATE anonymize.worker_state"
						 " SET last_slot = greatest(last_slot, $1)",
						 1, types, values, NULL, NULL);
}

/* a run starts: recorded as pending, so that a restart resumes it */
static void
anonymize_worker_mark_started(const char *trigger, TimestampTz slot,
							  TimestampTz started)
{
	Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[3];
	char		nulls[3] = {' ', slot ? ' ' : 'n', ' '};

	values[0] = CStringGetTextDatum(trigger);
	values[1] = TimestampTzGetDatum(slot);
	values[2] = TimestampTzGetDatum(started);
	anonymize_worker_sql("UPDATE anonymize.worker_state SET"
						 " pending_attempts = CASE WHEN pending_trigger IS NOT DISTINCT FROM $1"
						 "  AND pending_slot IS NOT DISTINCT FROM $2"
						 "  THEN pending_attempts + 1 ELSE 1 END,"
						 " pending_trigger = $1, pending_slot = $2,"
						 " last_trigger = $1, last_started = $3, last_finished = NULL,"
						 " last_outcome = 'running',"
						 " last_requests_done = NULL, last_requests_held = NULL,"
						 " last_requests_failed = NULL, last_rows_rewritten = NULL",
						 3, types, values, nulls, NULL);
}

/* a run ended (or was given up): its outcome and counts */
static void
anonymize_worker_mark_finished(TimestampTz slot, const char *outcome,
							   AnonymizeRunResult *r)
{
	Oid			types[6] = {TIMESTAMPTZOID, TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID};
	Datum		values[6];
	char		nulls[6] = {slot ? ' ' : 'n', ' ', r ? ' ' : 'n', r ? ' ' : 'n',
	r ? ' ' : 'n', r ? ' ' : 'n'};

	values[0] = TimestampTzGetDatum(slot);
	values[1] = CStringGetTextDatum(outcome);
	values[2] = Int64GetDatum(r ? r->requests_done : 0);
	values[3] = Int64GetDatum(r ? r->requests_held : 0);
	values[4] = Int64GetDatum(r ? r->requests_failed : 0);
	values[5] = Int64GetDatum(r ? r->rows_rewritten : 0);
	anonymize_worker_sql("UPDATE anonymize.worker_state SET"
						 " last_slot = greatest(last_slot, $1),"
						 " pending_trigger = NULL, pending_slot = NULL, pending_attempts = 0,"
						 " last_finished = clock_timestamp(), last_outcome = $2,"
						 " last_requests_done = $3, last_requests_held = $4,"
						 " last_requests_failed = $5, last_rows_rewritten = $6",
						 6, types, values, nulls, NULL);
}

/* ---------------------------------------------------------------------
 * The worker
 * ---------------------------------------------------------------------
 */

/* whether the extension is installed in this database */
static bool
anonymize_worker_extension_installed(void)
{
	bool		installed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid("anonymize", true));
	/* a Citus worker's shards are the coordinator's run's to erase */
	if (installed && anonymize_citus_worker_node())
		installed = false;
	CommitTransactionCommand();
	return installed;
}

/* "2026-11-29 02:00 Europe/Oslo" */
static void
anonymize_worker_format_local(TimestampTz t, char *buf, size_t len)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	pg_tz	   *tz = anonymize_tz();

	if (timestamp2tm(t, &tzoff, &tm, &fsec, NULL, tz) != 0)
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, "%04d-%02d-%02d %02d:%02d %s",
				 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min,
				 pg_get_timezone_name(tz));
}

/* a DROP EXTENSION not yet looked at, which this call takes */
static bool
anonymize_worker_take_recheck(void)
{
	bool		recheck;

	SpinLockAcquire(&worker_slot->mutex);
	recheck = worker_slot->recheck_extension;
	worker_slot->recheck_extension = false;
	SpinLockRelease(&worker_slot->mutex);
	return recheck;
}

/* after a DROP EXTENSION: waits of 100 ms for the next looks, so many */
#define ANONYMIZE_WORKER_RECHECK_TURNS 20
#define ANONYMIZE_WORKER_RECHECK_MS 100
static int	worker_recheck_turns = 0;

/*
 * Sleeps until woken, or the timeout.  After a DROP EXTENSION came in (its
 * latch set may have been consumed by another wait), the next looks come
 * every 100 ms for two seconds, since the commit that told us may not be
 * complete in every respect when we look.
 */
static void
anonymize_worker_wait(long timeout_ms)
{
	if (anonymize_worker_take_recheck())
		worker_recheck_turns = ANONYMIZE_WORKER_RECHECK_TURNS;
	if (worker_recheck_turns > 0)
	{
		worker_recheck_turns--;
		timeout_ms = Min(timeout_ms, ANONYMIZE_WORKER_RECHECK_MS);
	}
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Max(timeout_ms, 1), PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * One run (the run logs its start and its counts).  An error ends the
 * worker; it is restarted and resumes the run.
 */
static void
anonymize_worker_run(const char *trigger, TimestampTz slot)
{
	AnonymizeWorkerShared *s = worker_slot;
	AnonymizeRunResult result;
	TimestampTz started = GetCurrentTimestamp();
	char		activity[128];

	SpinLockAcquire(&s->mutex);
	s->state = ANONYMIZE_WORKER_RUNNING;
	s->next_run = 0;
	s->last_started = started;
	s->last_finished = 0;
	strlcpy(s->last_trigger, trigger, ANONYMIZE_WORKER_TEXTLEN);
	strlcpy(s->last_outcome, "running", ANONYMIZE_WORKER_TEXTLEN);
	s->last_requests_done = s->last_requests_held = 0;
	s->last_requests_failed = s->last_rows_rewritten = 0;
	SpinLockRelease(&s->mutex);

	snprintf(activity, sizeof(activity), "starting a run (%s)", trigger);
	pgstat_report_activity(STATE_RUNNING, activity);
	anonymize_worker_mark_started(trigger, slot, started);

	memset(&result, 0, sizeof(result));
	PG_TRY();
	{
		anonymize_run_execute(&result, trigger);
	}
	PG_CATCH();
	{
		SpinLockAcquire(&s->mutex);
		s->last_finished = GetCurrentTimestamp();
		strlcpy(s->last_outcome, "failed", ANONYMIZE_WORKER_TEXTLEN);
		SpinLockRelease(&s->mutex);
		PG_RE_THROW();
	}
	PG_END_TRY();

	anonymize_worker_mark_finished(slot, "ok", &result);

	SpinLockAcquire(&s->mutex);
	s->last_finished = GetCurrentTimestamp();
	strlcpy(s->last_outcome, "ok", ANONYMIZE_WORKER_TEXTLEN);
	s->last_requests_done = result.requests_done;
	s->last_requests_held = result.requests_held;
	s->last_requests_failed = result.requests_failed;
	s->last_rows_rewritten = result.rows_rewritten;
	SpinLockRelease(&s->mutex);
}

/*
 * After a (re)start: resume a run left unfinished, else catch up the latest
 * scheduled run if it was missed.  Returns false once nothing is left to do.
 */
static bool
anonymize_worker_recover(void)
{
	AnonymizeWorkerRow row;
	TimestampTz latest = anonymize_schedule_latest(GetCurrentTimestamp());

	anonymize_worker_read_row(&row);
	if (!row.found || row.last_slot == 0)
	{
		/* first start in this database: nothing was missed */
		anonymize_worker_baseline(latest);
		return false;
	}
	if (row.pending_trigger[0] != '\0')
	{
		if (row.pending_attempts >= ANONYMIZE_WORKER_MAX_ATTEMPTS)
		{
			ereport(WARNING,
					(errmsg("anonymize worker: giving up a run (%s) that did not finish in %d attempts",
							row.pending_trigger, row.pending_attempts),
					 errhint("See the server log for why; the next scheduled run or wake() tries again.")));
			anonymize_worker_mark_finished(row.pending_slot, "given up", NULL);
		}
		else
		{
			ereport(LOG,
					(errmsg("anonymize worker: resuming an unfinished run (%s)",
							row.pending_trigger)));
			anonymize_worker_run(row.pending_trigger, row.pending_slot);
		}
		return true;
	}
	if (row.last_slot < latest)
	{
		if (anonymize_enabled)
		{
			ereport(LOG,
					(errmsg("anonymize worker: catching up a missed scheduled run")));
			anonymize_worker_run("schedule", latest);
		}
		else
			anonymize_worker_skip(latest);
		return true;
	}
	return false;
}

/*
 * Takes the slot the launcher gave (main_arg: its index; bgw_extra: the
 * database's oid) and connects to the database, unless a DROP DATABASE or
 * the like holds it.
 */
static void
anonymize_worker_attach(Datum main_arg)
{
	int			index = DatumGetInt32(main_arg);
	Oid			dboid;
	AnonymizeWorkerShared *s;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	if (!anonymize_slots_ready() || index < 0 || index >= anonymize_slots_count())
		elog(ERROR, "anonymize worker: no slot %d", index);
	s = anonymize_slot_at(index);

	SpinLockAcquire(&s->mutex);
	if (s->dboid != dboid || s->pid != 0)
	{
		SpinLockRelease(&s->mutex);
		elog(LOG, "anonymize worker: slot %d is not for database %u", index, dboid);
		proc_exit(0);
	}
	s->pid = MyProcPid;
	s->latch = MyLatch;
	s->state = ANONYMIZE_WORKER_STARTING;
	s->next_run = 0;
	s->start_requested = false;
	s->no_extension = false;
	s->extension_seen = false;
	s->recheck_extension = false;
	SpinLockRelease(&s->mutex);
	worker_slot = s;
	on_shmem_exit(anonymize_worker_on_exit, (Datum) 0);

	/* after the pid is set: a hold taken from now on waits for this exit */
	if (anonymize_held(dboid))
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_activity(STATE_IDLE, "starting");
}

/* SIGHUP: reload; run_at or the time zone may have changed */
static void
anonymize_worker_reload(TimestampTz *next_slot)
{
	if (!ConfigReloadPending)
		return;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	/* a due run stays due */
	if (*next_slot > GetCurrentTimestamp())
		*next_slot = 0;
}

/*
 * The extension is there; if not, idle until it is created (a database
 * named in anonymize.database), or leave (with "*": the launcher starts a
 * worker again once it is created).
 */
static bool
anonymize_worker_has_extension(void)
{
	if (anonymize_worker_extension_installed())
	{
		/* the launcher may start the next worker that looks ("*") */
		if (!worker_slot->extension_seen)
		{
			SpinLockAcquire(&worker_slot->mutex);
			worker_slot->extension_seen = true;
			SpinLockRelease(&worker_slot->mutex);
			anonymize_launcher_wakeup();
		}
		return true;
	}
	anonymize_worker_set_state(ANONYMIZE_WORKER_NO_EXTENSION, 0);
	if (anonymize_database_all())
	{
		SpinLockAcquire(&worker_slot->mutex);
		worker_slot->no_extension = true;
		SpinLockRelease(&worker_slot->mutex);
		elog(DEBUG1, "anonymize worker: no extension in database %u, leaving", MyDatabaseId);
		proc_exit(0);
	}
	pgstat_report_activity(STATE_IDLE, "waiting for CREATE EXTENSION anonymize");
	anonymize_worker_wait(ANONYMIZE_WORKER_POLL_MS);
	return false;
}

/* a wake() not yet taken up, which this call takes */
static bool
anonymize_worker_take_wake(void)
{
	bool		wake;

	SpinLockAcquire(&worker_slot->mutex);
	wake = worker_slot->wake_requested;
	worker_slot->wake_requested = false;
	SpinLockRelease(&worker_slot->mutex);
	return wake;
}

/* until the next scheduled instant (at most a minute), or until woken */
static void
anonymize_worker_idle(TimestampTz now, TimestampTz next_slot)
{
	char		when[64];
	char		activity[128];

	anonymize_worker_format_local(next_slot, when, sizeof(when));
	if (anonymize_enabled)
	{
		anonymize_worker_set_state(ANONYMIZE_WORKER_WAITING, next_slot);
		snprintf(activity, sizeof(activity), "waiting until %s", when);
	}
	else
	{
		anonymize_worker_set_state(ANONYMIZE_WORKER_DISABLED, 0);
		snprintf(activity, sizeof(activity),
				 "anonymize.enabled is off: waiting for wake()");
	}
	pgstat_report_activity(STATE_IDLE, activity);
	anonymize_worker_wait(Min(TimestampDifferenceMilliseconds(now, next_slot),
							  ANONYMIZE_WORKER_MAX_SLEEP_MS));
}

/* one turn of the schedule: a woken run, a scheduled run, or a wait */
static void
anonymize_worker_step(TimestampTz *next_slot)
{
	TimestampTz now = GetCurrentTimestamp();

	if (*next_slot == 0)
		*next_slot = anonymize_schedule_next(now);

	if (anonymize_worker_take_wake())
		anonymize_worker_run("wake()", 0);
	else if (now >= *next_slot)
	{
		TimestampTz slot = *next_slot;

		*next_slot = anonymize_schedule_next(now);
		if (anonymize_enabled)
			anonymize_worker_run("schedule", slot);
		else
			anonymize_worker_skip(slot);
	}
	else
		anonymize_worker_idle(now, *next_slot);
}

/* the worker: attach, then recover, then the schedule, until told to stop */
void
anonymize_worker_main(Datum main_arg)
{
	bool		recovered = false;
	TimestampTz next_slot = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	anonymize_worker_attach(main_arg);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		anonymize_worker_reload(&next_slot);

		/* DROP DATABASE or the like wants the database to itself */
		if (anonymize_held(MyDatabaseId))
			proc_exit(0);

		/* (a hot standby can read its catalogs: no worker without the extension) */
		if (!anonymize_worker_has_extension())
			continue;
		else if (RecoveryInProgress())
		{
			anonymize_worker_set_state(ANONYMIZE_WORKER_STANDBY, 0);
			pgstat_report_activity(STATE_IDLE, "hot standby: runs nothing until promoted");
			anonymize_worker_wait(ANONYMIZE_WORKER_POLL_MS);
		}
		else if (!recovered)
			recovered = !anonymize_worker_recover();
		else
			anonymize_worker_step(&next_slot);
	}
}
