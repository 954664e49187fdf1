/*-------------------------------------------------------------------------
 *
 * anonymize_utility.c
 *	  A ProcessUtility_hook, installed at preload in every backend, that
 *	  keeps the per-database workers out of the way of the statements that
 *	  need a database without other connections, and tells the launcher
 *	  and the workers when the extension comes or goes.
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME TO / SET TABLESPACE and CREATE
 * DATABASE ... TEMPLATE (template1 when none is named) fail when another
 * session is connected to that database, after waiting only 5 seconds.
 * Before such a statement by the database's owner (or a superuser: others
 * are refused anyway) the hook holds the database (anonymize_hold():
 * the launcher starts no worker there), asks its worker to leave (its
 * latch first, which an idle worker obeys at once; SIGTERM after a second,
 * which also cuts a run short: it resumes later) and waits until it has
 * exited.  After the statement, whether it succeeded or failed, the hold
 * is released and the launcher woken: if the database is still there, its
 * worker comes back at once.
 *
 * CREATE EXTENSION anonymize, once committed, asks the launcher for a
 * worker in that database if anonymize.database serves it (with "*" it
 * would otherwise notice within anonymize.rescan_interval); DROP
 * EXTENSION anonymize, once committed, wakes the database's worker, which
 * then sees that the extension is gone.  CREATE DATABASE wakes the
 * launcher too, for a database that anonymize.database names.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "anonymize_settings.h"
#include "anonymize_slots.h"
#include "anonymize_utility.h"

/* how long the hook waits for a worker to leave before it signals it */
#define UTILITY_LATCH_GRACE_MS 1000
/* how long it waits in all: then PostgreSQL's own 5 s wait decides */
#define UTILITY_WAIT_MAX_MS 10000

static ProcessUtility_hook_type prev_process_utility = NULL;

/* what the current transaction did to the extension, told at commit */
static bool utility_created = false;
static bool utility_dropped = false;
static bool utility_callback_registered = false;

/* the value of the DefElem named name in options, or NULL */
static char *
utility_option(List *options, const char *name)
{
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *d = (DefElem *) lfirst(lc);

		if (strcmp(d->defname, name) == 0 && d->arg != NULL)
			return defGetString(d);
	}
	return NULL;
}

/*
 * The database of that name if the current user owns it (or is a
 * superuser), else InvalidOid: a statement that is refused anyway does
 * not get to stop a worker.  (Not inlined, here and below: in the hook,
 * whose PG_TRY would make the compiler fear for their locals.)
 */
static pg_noinline Oid
utility_owned_database(const char *name)
{
	Oid			dboid = get_database_oid(name, true);
	HeapTuple	tup;
	bool		owner = false;

	if (!OidIsValid(dboid))
		return InvalidOid;
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (HeapTupleIsValid(tup))
	{
		owner = has_privs_of_role(GetUserId(),
								  ((Form_pg_database) GETSTRUCT(tup))->datdba);
		ReleaseSysCache(tup);
	}
	return owner ? dboid : InvalidOid;
}

/* the database the statement needs without other connections, or InvalidOid */
static pg_noinline Oid
utility_database_to_hold(Node *stmt)
{
	const char *name = NULL;

	if (IsA(stmt, DropdbStmt))
		name = ((DropdbStmt *) stmt)->dbname;
	else if (IsA(stmt, RenameStmt) &&
			 ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		name = ((RenameStmt *) stmt)->subname;
	else if (IsA(stmt, AlterDatabaseStmt) &&
			 utility_option(((AlterDatabaseStmt *) stmt)->options, "tablespace"))
		name = ((AlterDatabaseStmt *) stmt)->dbname;
	else if (IsA(stmt, CreatedbStmt))
	{
		name = utility_option(((CreatedbStmt *) stmt)->options, "template");
		if (name == NULL)
			name = "template1";
	}
	return name ? utility_owned_database(name) : InvalidOid;
}

/* the pid of the worker of dboid, 0 when none runs */
static pid_t
utility_worker_pid(Oid dboid, Latch **latch)
{
	AnonymizeWorkerShared *s = anonymize_slot_find(dboid);
	pid_t		pid = 0;

	if (s == NULL)
		return 0;
	SpinLockAcquire(&s->mutex);
	if (s->dboid == dboid)
	{
		pid = s->pid;
		if (latch)
			*latch = s->latch;
	}
	SpinLockRelease(&s->mutex);
	return pid;
}

/* asks the worker of a held database to leave, and waits until it has */
static void
utility_clear_database(Oid dboid)
{
	TimestampTz start = GetCurrentTimestamp();
	Latch	   *latch = NULL;
	pid_t		pid = utility_worker_pid(dboid, &latch);
	bool		signalled = false;

	if (pid == 0)
		return;
	if (latch)
		SetLatch(latch);
	while ((pid = utility_worker_pid(dboid, NULL)) != 0)
	{
		long		waited = TimestampDifferenceMilliseconds(start, GetCurrentTimestamp());

		if (waited >= UTILITY_WAIT_MAX_MS)
			break;
		if (!signalled && waited >= UTILITY_LATCH_GRACE_MS)
		{
			kill(pid, SIGTERM);
			signalled = true;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * DROP EXTENSION committed: the worker looks again.  A flag, not only the
 * latch: a condition-variable sleep in the worker (an I/O wait, say) may
 * consume a latch set meant for its idle wait.
 */
static void
utility_tell_dropped(Oid dboid)
{
	AnonymizeWorkerShared *s = anonymize_slot_find(dboid);
	Latch	   *latch = NULL;

	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	if (s->dboid == dboid && s->pid != 0)
	{
		s->recheck_extension = true;
		latch = s->latch;
	}
	SpinLockRelease(&s->mutex);
	if (latch)
		SetLatch(latch);
}

/* at commit: tell the launcher or the worker what happened to the extension */
static void
utility_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT)
	{
		if (utility_created)
			(void) anonymize_slot_request(MyDatabaseId, false);
		else if (utility_dropped)
			utility_tell_dropped(MyDatabaseId);
	}
	/* a prepared transaction commits later, maybe elsewhere: not told */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		utility_created = utility_dropped = false;
}

/* CREATE or DROP EXTENSION anonymize: remember it for the commit */
static void
utility_note_extension(Node *stmt)
{
	bool		created = false;
	bool		dropped = false;

	if (IsA(stmt, CreateExtensionStmt))
		created = strcmp(((CreateExtensionStmt *) stmt)->extname, "anonymize") == 0;
	else if (IsA(stmt, DropStmt) &&
			 ((DropStmt *) stmt)->removeType == OBJECT_EXTENSION)
	{
		ListCell   *lc;

		foreach(lc, ((DropStmt *) stmt)->objects)
			if (IsA(lfirst(lc), String) &&
				strcmp(strVal(lfirst(lc)), "anonymize") == 0)
				dropped = true;
	}
	if (!created && !dropped)
		return;
	if (!utility_callback_registered)
	{
		RegisterXactCallback(utility_xact_callback, NULL);
		utility_callback_registered = true;
	}
	if (created && anonymize_database_serves(get_database_name(MyDatabaseId)))
		utility_created = true;
	if (dropped)
		utility_dropped = true;
}

/* the next hook, or the standard one */
static void
utility_next(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			 ProcessUtilityContext context, ParamListInfo params,
			 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context,
							 params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

/* ProcessUtility_hook: see the file's header */
static void
utility_hook(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			 ProcessUtilityContext context, ParamListInfo params,
			 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;
	Oid			held = utility_database_to_hold(stmt);

	utility_note_extension(stmt);
	if (!OidIsValid(held) || !anonymize_hold(held))
	{
		utility_next(pstmt, queryString, readOnlyTree, context, params,
					 queryEnv, dest, qc);
		if (IsA(stmt, CreatedbStmt))
			anonymize_launcher_wakeup();
		return;
	}

	PG_TRY();
	{
		utility_clear_database(held);
		utility_next(pstmt, queryString, readOnlyTree, context, params,
					 queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		anonymize_release(held);
		anonymize_launcher_wakeup();
	}
	PG_END_TRY();
}

/* installs the hook, from _PG_init at preload */
void
anonymize_utility_install(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = utility_hook;
}
