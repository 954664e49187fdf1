/*-------------------------------------------------------------------------
 *
 * anonymize_launcher.c
 *	  The launcher: one background worker, registered at preload, that
 *	  starts a worker (anonymize_worker.c) in each database that
 *	  anonymize.database names, or with "*" in each database where the
 *	  extension is installed, and stops the workers no longer wanted.
 *
 * The launcher is connected to no database: it reads only the shared
 * catalog pg_database.  Each turn it compares the databases there with
 * anonymize.database and with the slots in shared memory (one per
 * database served, anonymize_slots.c):
 *
 *	- a database named in anonymize.database gets a worker (it idles until
 *	  CREATE EXTENSION there); a name that matches no database is logged
 *	  once per launcher start, or per reload that changes the setting;
 *	- with "*", the launcher cannot see pg_extension of other databases, so
 *	  it starts a worker in each database that allows connections (not the
 *	  templates), a couple at a time; a worker that finds no extension
 *	  leaves at once, and that database is looked at again after
 *	  anonymize.rescan_interval (a minute), or at once when CREATE EXTENSION
 *	  anonymize commits there (anonymize_utility.c) or wake() is called;
 *	- a worker that exited with an error (or was killed) is started again
 *	  after ANONYMIZE_LAUNCHER_RESTART_SECONDS, and resumes its run;
 *	- no worker runs in a database that a DROP DATABASE (or the like) holds.
 *
 * The workers are dynamic background workers that the postmaster never
 * restarts itself: the launcher does (after a crash restart too, since it
 * is started again with everything).  It wakes on its latch (SIGHUP, a
 * worker starting or stopping, wake(), CREATE EXTENSION, a hold released)
 * and otherwise every anonymize.rescan_interval.  SIGTERM ends it at once;
 * the postmaster starts it again after ANONYMIZE_LAUNCHER_RESTART_SECONDS,
 * and it adopts the workers that still run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "anonymize_settings.h"
#include "anonymize_slots.h"
#include "anonymize_worker.h"

#define ANONYMIZE_LAUNCHER_RESTART_SECONDS 10
/* with "*": workers that look for the extension at the same time, at most */
#define ANONYMIZE_LAUNCHER_PROBES 2

/* a row of pg_database, as the launcher needs it */
typedef struct LauncherDb
{
	Oid			oid;
	char		name[NAMEDATALEN];
	bool		connectable;	/* allows connections */
	bool		istemplate;
} LauncherDb;

/* when a database without the extension is looked at again ("*") */
typedef struct LauncherProbe
{
	Oid			dboid;			/* hash key */
	TimestampTz checked;		/* when a worker last found no extension */
} LauncherProbe;

/* the launcher's own memory, per slot */
static BackgroundWorkerHandle **launcher_handles = NULL;
static TimestampTz *launcher_restart_at = NULL;

static HTAB *launcher_probes = NULL;
static List *launcher_warned = NIL; /* names logged as missing */
static char *launcher_setting = NULL;	/* anonymize.database, last seen */
static bool launcher_full_warned = false;
static MemoryContext launcher_turn_cxt = NULL;

/* what one turn saw: the databases and the setting */
typedef struct LauncherTurn
{
	TimestampTz now;
	TimestampTz next;			/* when to look again */
	LauncherDb *dbs;
	int			ndbs;
	bool		all;
	List	   *names;
	int			probes;			/* workers looking for the extension ("*") */
} LauncherTurn;

/* the launcher's static background worker and the workers' shared memory */
void
anonymize_launcher_register(void)
{
	BackgroundWorker worker;

	anonymize_slots_request();

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* consistent state, so that the workers also start (and idle) on a standby */
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = ANONYMIZE_LAUNCHER_RESTART_SECONDS;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "anonymize");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "anonymize_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "anonymize launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "anonymize launcher");
	/* not in pg_upgrade's servers: a worker's session would block their restore */
	if (!IsBinaryUpgrade)
		RegisterBackgroundWorker(&worker);
}

/* pg_database's rows, in the turn's memory */
static void
launcher_read_databases(LauncherTurn *t)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			cap = 16;

	MemoryContext cxt = CurrentMemoryContext;

	t->dbs = palloc(cap * sizeof(LauncherDb));
	t->ndbs = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database d = (Form_pg_database) GETSTRUCT(tup);
		LauncherDb *db;

		/* being dropped (or a drop that was interrupted): as good as gone */
		if (database_is_invalid_form(d))
			continue;
		if (t->ndbs == cap)
		{
			cap *= 2;
			t->dbs = repalloc(t->dbs, cap * sizeof(LauncherDb));
		}
		db = &t->dbs[t->ndbs++];
		db->oid = d->oid;
		strlcpy(db->name, NameStr(d->datname), NAMEDATALEN);
		db->connectable = d->datallowconn;
		db->istemplate = d->datistemplate;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}

/* the database of that oid, or NULL */
static LauncherDb *
launcher_db(LauncherTurn *t, Oid dboid)
{
	int			i;

	for (i = 0; i < t->ndbs; i++)
		if (t->dbs[i].oid == dboid)
			return &t->dbs[i];
	return NULL;
}

/* whether anonymize.database serves the database */
static bool
launcher_serves(LauncherTurn *t, LauncherDb *db)
{
	ListCell   *lc;

	if (db == NULL || !db->connectable)
		return false;
	if (t->all)
		return !db->istemplate;
	foreach(lc, t->names)
		if (strcmp(strVal(lfirst(lc)), db->name) == 0)
			return true;
	return false;
}

/* the probe entry of a database ("*"), made due now when new */
static LauncherProbe *
launcher_probe(Oid dboid)
{
	bool		found;
	LauncherProbe *p = hash_search(launcher_probes, &dboid, HASH_ENTER, &found);

	if (!found)
		p->checked = 0;
	return p;
}

/*
 * A worker that stopped: with no extension there ("*"), look again after
 * the rescan interval; after an error, start it again a little later.
 */
static void
launcher_reap(LauncherTurn *t, int i)
{
	AnonymizeWorkerShared *s = anonymize_slot_at(i);
	bool		no_extension;
	Oid			dboid;

	pfree(launcher_handles[i]);
	launcher_handles[i] = NULL;
	SpinLockAcquire(&s->mutex);
	no_extension = s->no_extension;
	dboid = s->dboid;
	SpinLockRelease(&s->mutex);

	launcher_restart_at[i] = 0;
	if (no_extension)
	{
		launcher_probe(dboid)->checked = t->now;
		anonymize_slot_free(s, false);
	}
	else if (!anonymize_held(dboid))
		launcher_restart_at[i] =
			TimestampTzPlusMilliseconds(t->now, ANONYMIZE_LAUNCHER_RESTART_SECONDS * 1000L);
}

/* whether the worker of slot i runs (or is about to); reaps it if not */
static bool
launcher_alive(LauncherTurn *t, int i)
{
	AnonymizeWorkerShared *s = anonymize_slot_at(i);
	pid_t		pid;

	if (launcher_handles[i] != NULL)
	{
		if (GetBackgroundWorkerPid(launcher_handles[i], &pid) != BGWH_STOPPED)
			return true;
		launcher_reap(t, i);
		return false;
	}
	/* started by the launcher before this one: alive while it says so */
	SpinLockAcquire(&s->mutex);
	pid = s->pid;
	SpinLockRelease(&s->mutex);
	return pid != 0;
}

/* asks the worker of slot i to stop */
static void
launcher_stop(int i)
{
	AnonymizeWorkerShared *s = anonymize_slot_at(i);
	pid_t		pid;

	if (launcher_handles[i] != NULL)
	{
		TerminateBackgroundWorker(launcher_handles[i]);
		return;
	}
	SpinLockAcquire(&s->mutex);
	pid = s->pid;
	SpinLockRelease(&s->mutex);
	if (pid != 0)
		kill(pid, SIGTERM);
}

/* a worker for db in slot i; false when no background worker is free */
static bool
launcher_start(LauncherTurn *t, LauncherDb *db, int i)
{
	BackgroundWorker worker;
	MemoryContext old;
	bool		registered;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "anonymize");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "anonymize_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "anonymize worker for database %s",
			 db->name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "anonymize worker");
	worker.bgw_main_arg = Int32GetDatum(i);
	memcpy(worker.bgw_extra, &db->oid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;

	launcher_restart_at[i] = 0;
	/* the handle outlives the turn */
	old = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &launcher_handles[i]);
	MemoryContextSwitchTo(old);
	if (registered)
		return true;
	launcher_handles[i] = NULL;
	launcher_restart_at[i] =
		TimestampTzPlusMilliseconds(t->now, ANONYMIZE_LAUNCHER_RESTART_SECONDS * 1000L);
	if (!launcher_full_warned)
		ereport(WARNING,
				(errmsg("anonymize launcher: no background worker free for the worker of database \"%s\"",
						db->name),
				 errhint("Raise max_worker_processes (one worker per database served, plus the launcher) and restart the server.")));
	launcher_full_warned = true;
	return false;
}

/* a worker that has not yet found the extension */
static bool
launcher_starting(AnonymizeWorkerShared *s)
{
	bool		seen;

	SpinLockAcquire(&s->mutex);
	seen = s->extension_seen;
	SpinLockRelease(&s->mutex);
	return !seen;
}

/* slots in use: stop the workers no longer wanted, give back idle slots */
static void
launcher_check_slots(LauncherTurn *t)
{
	int			i;

	for (i = 0; i < anonymize_slots_count(); i++)
	{
		AnonymizeWorkerShared *s = anonymize_slot_at(i);
		Oid			dboid;
		bool		wanted;

		SpinLockAcquire(&s->mutex);
		dboid = s->dboid;
		SpinLockRelease(&s->mutex);
		if (!OidIsValid(dboid))
		{
			if (launcher_handles[i] != NULL)
				launcher_alive(t, i);
			continue;
		}
		wanted = launcher_serves(t, launcher_db(t, dboid)) && !anonymize_held(dboid);
		if (launcher_alive(t, i))
		{
			if (!wanted)
				launcher_stop(i);
			else if (launcher_starting(s))
				t->probes++;
		}
		else if (!wanted)
		{
			launcher_restart_at[i] = 0;
			anonymize_slot_free(s, true);
		}
	}
}

/* whether db (served, held by nobody) needs a worker started now */
static bool
launcher_due(LauncherTurn *t, LauncherDb *db, AnonymizeWorkerShared *s, int i)
{
	bool		asked = false;
	TimestampTz due;

	if (s != NULL)
	{
		if (launcher_restart_at[i] > t->now)
		{
			t->next = Min(t->next, launcher_restart_at[i]);
			return false;
		}
		SpinLockAcquire(&s->mutex);
		asked = s->wake_requested || s->start_requested;
		SpinLockRelease(&s->mutex);
	}
	if (!t->all || asked)
		return true;
	/* measured from the last look, so that a new interval applies at once */
	due = launcher_probe(db->oid)->checked;
	if (due != 0)
		due = TimestampTzPlusMilliseconds(due, anonymize_rescan_interval * 1000L);
	if (due > t->now)
	{
		t->next = Min(t->next, due);
		return false;
	}
	if (t->probes >= ANONYMIZE_LAUNCHER_PROBES)
		return false;			/* the next turn comes when one of them is done */
	t->probes++;
	return true;
}

/* databases served without a running worker: start one where due */
static int
launcher_start_workers(LauncherTurn *t)
{
	int			i;
	int			served = 0;

	for (i = 0; i < t->ndbs; i++)
	{
		LauncherDb *db = &t->dbs[i];
		AnonymizeWorkerShared *s;
		int			index = -1;

		if (!launcher_serves(t, db) || anonymize_held(db->oid))
			continue;
		s = anonymize_slot_find(db->oid);
		if (s != NULL)
		{
			index = s - anonymize_slot_at(0);
			if (launcher_alive(t, index))
			{
				served++;
				continue;
			}
		}
		if (!launcher_due(t, db, s, index))
			continue;
		if (s == NULL && (s = anonymize_slot_get(db->oid)) == NULL)
		{
			if (!launcher_full_warned)
				ereport(WARNING,
						(errmsg("anonymize launcher: no slot free for the worker of database \"%s\"",
								db->name),
						 errhint("Raise max_worker_processes (one worker per database served, plus the launcher) and restart the server.")));
			launcher_full_warned = true;
			continue;
		}
		if (launcher_start(t, db, s - anonymize_slot_at(0)))
			served++;
	}
	return served;
}

/* names in anonymize.database without a database: logged once each */
static void
launcher_warn_missing(LauncherTurn *t)
{
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, t->names)
	{
		char	   *name = strVal(lfirst(lc));
		LauncherDb *db = NULL;
		int			i;

		for (i = 0; i < t->ndbs && db == NULL; i++)
			if (strcmp(t->dbs[i].name, name) == 0)
				db = &t->dbs[i];
		if (db != NULL && db->connectable)
		{
			/* found: should it go again, say so again */
			launcher_warned = list_delete(launcher_warned, lfirst(lc));
			continue;
		}
		if (list_member(launcher_warned, lfirst(lc)))
			continue;
		ereport(WARNING,
				(errmsg(db ? "anonymize.database names database \"%s\", which does not allow connections"
						: "anonymize.database names database \"%s\", which does not exist",
						name),
				 errhint("Create the database (the launcher notices it within a minute), or correct anonymize.database and reload the configuration.")));
		old = MemoryContextSwitchTo(TopMemoryContext);
		launcher_warned = lappend(launcher_warned, makeString(pstrdup(name)));
		MemoryContextSwitchTo(old);
	}
}

/* SIGHUP: reload; a changed anonymize.database is reported afresh */
static void
launcher_reload(void)
{
	if (!ConfigReloadPending)
		return;
	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);
	if (launcher_setting == NULL || strcmp(launcher_setting, anonymize_database) != 0)
	{
		list_free_deep(launcher_warned);
		launcher_warned = NIL;
		launcher_full_warned = false;
		if (launcher_setting)
			pfree(launcher_setting);
		launcher_setting = MemoryContextStrdup(TopMemoryContext, anonymize_database);
	}
}

/* one look at the databases; returns how long to sleep */
static long
launcher_turn(void)
{
	LauncherTurn t;
	MemoryContext old = MemoryContextSwitchTo(launcher_turn_cxt);
	char		activity[64];
	int			served;

	memset(&t, 0, sizeof(t));
	t.now = GetCurrentTimestamp();
	t.next = TimestampTzPlusMilliseconds(t.now, anonymize_rescan_interval * 1000L);
	t.names = anonymize_database_parse(anonymize_database, &t.all);
	anonymize_release_orphans();
	launcher_read_databases(&t);
	launcher_check_slots(&t);
	served = launcher_start_workers(&t);
	launcher_warn_missing(&t);

	snprintf(activity, sizeof(activity), "%d worker%s", served,
			 served == 1 ? "" : "s");
	pgstat_report_activity(STATE_IDLE, activity);
	MemoryContextSwitchTo(old);
	MemoryContextReset(launcher_turn_cxt);
	return TimestampDifferenceMilliseconds(GetCurrentTimestamp(), t.next);
}

/* the launcher's memory: handles and restart times per slot, probes */
static void
launcher_init(void)
{
	HASHCTL		ctl;
	int			n = anonymize_slots_count();

	launcher_handles = MemoryContextAllocZero(TopMemoryContext,
											  n * sizeof(BackgroundWorkerHandle *));
	launcher_restart_at = MemoryContextAllocZero(TopMemoryContext,
												 n * sizeof(TimestampTz));
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(LauncherProbe);
	launcher_probes = hash_create("anonymize launcher probes", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS);
	launcher_turn_cxt = AllocSetContextCreate(TopMemoryContext,
											  "anonymize launcher turn",
											  ALLOCSET_DEFAULT_SIZES);
	launcher_setting = MemoryContextStrdup(TopMemoryContext, anonymize_database);
}

/* the launcher: a turn whenever woken, and at least every rescan interval */
void
anonymize_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (!anonymize_slots_ready())
		elog(ERROR, "anonymize launcher: shared memory not initialized");
	anonymize_launcher_attach();
	/* no database: only the shared catalogs (pg_database) */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	launcher_init();

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		launcher_reload();
		sleep_ms = launcher_turn();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(sleep_ms, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
