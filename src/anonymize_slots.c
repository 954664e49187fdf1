/*-------------------------------------------------------------------------
 *
 * anonymize_slots.c
 *	  Shared memory of the launcher and the per-database workers: one slot
 *	  per database served (max_worker_processes of them: every worker is a
 *	  background worker, so there can never be more), the launcher's pid
 *	  and latch, and the databases a DROP DATABASE (or ALTER DATABASE
 *	  RENAME / SET TABLESPACE, CREATE DATABASE ... TEMPLATE) holds while it
 *	  runs, so that the launcher starts no worker there.
 *
 * A slot belongs to a database (dboid) from the moment the launcher starts
 * a worker there, or wake() or CREATE EXTENSION asks for one, until the
 * launcher gives it back once no worker runs there.  Which database a slot
 * belongs to, and the holds, change under one LWLock; everything else in
 * a slot under the slot's spinlock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "anonymize_slots.h"

#define SLOTS_TRANCHE "anonymize workers"

typedef struct SlotsHeader
{
	slock_t		mutex;			/* the launcher's pid and latch */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	/* under the LWLock */
	Oid			held[ANONYMIZE_MAX_HELD];
	pid_t		held_by[ANONYMIZE_MAX_HELD];
	int			nslots;
	AnonymizeWorkerShared slots[FLEXIBLE_ARRAY_MEMBER];
} SlotsHeader;

static SlotsHeader *slots_header = NULL;
static LWLock *slots_lock = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* bytes of the header and its max_worker_processes slots */
static Size
slots_size(void)
{
	return add_size(offsetof(SlotsHeader, slots),
					mul_size(sizeof(AnonymizeWorkerShared), max_worker_processes));
}

/* shmem_request_hook: our memory and our lock */
static void
slots_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(slots_size()));
	RequestNamedLWLockTranche(SLOTS_TRANCHE, 1);
}

/* shmem_startup_hook: every slot free, nobody holds anything */
static void
slots_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	slots_header = ShmemInitStruct("anonymize workers", slots_size(), &found);
	if (!found)
	{
		memset(slots_header, 0, slots_size());
		SpinLockInit(&slots_header->mutex);
		slots_header->nslots = max_worker_processes;
		for (i = 0; i < slots_header->nslots; i++)
			SpinLockInit(&slots_header->slots[i].mutex);
	}
	slots_lock = &(GetNamedLWLockTranche(SLOTS_TRANCHE))->lock;
	LWLockRelease(AddinShmemInitLock);
}

/* installs the shared memory hooks, from _PG_init at preload */
void
anonymize_slots_request(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = slots_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = slots_shmem_startup;
}

/* whether the shared memory exists (the module was preloaded) */
bool
anonymize_slots_ready(void)
{
	return slots_header != NULL;
}

/* how many slots there are: max_worker_processes */
int
anonymize_slots_count(void)
{
	return slots_header ? slots_header->nslots : 0;
}

/* the slot at that index */
AnonymizeWorkerShared *
anonymize_slot_at(int index)
{
	Assert(index >= 0 && index < slots_header->nslots);
	return &slots_header->slots[index];
}

/* the slot of dboid, or NULL; the caller holds the lock */
static AnonymizeWorkerShared *
slots_find_locked(Oid dboid)
{
	int			i;

	for (i = 0; i < slots_header->nslots; i++)
		if (slots_header->slots[i].dboid == dboid)
			return &slots_header->slots[i];
	return NULL;
}

/* a free slot given to dboid, or NULL; the caller holds the lock exclusively */
static AnonymizeWorkerShared *
slots_take_locked(Oid dboid)
{
	AnonymizeWorkerShared *s = slots_find_locked(InvalidOid);
	slock_t		mutex;

	if (s == NULL)
		return NULL;
	mutex = s->mutex;
	memset(s, 0, sizeof(*s));
	s->mutex = mutex;
	s->dboid = dboid;
	return s;
}

/* the slot of a database, or NULL */
AnonymizeWorkerShared *
anonymize_slot_find(Oid dboid)
{
	AnonymizeWorkerShared *s;

	if (slots_header == NULL || !OidIsValid(dboid))
		return NULL;
	LWLockAcquire(slots_lock, LW_SHARED);
	s = slots_find_locked(dboid);
	LWLockRelease(slots_lock);
	return s;
}

/* the slot of a database, taken when it has none; NULL when all are used */
AnonymizeWorkerShared *
anonymize_slot_get(Oid dboid)
{
	AnonymizeWorkerShared *s;

	LWLockAcquire(slots_lock, LW_EXCLUSIVE);
	s = slots_find_locked(dboid);
	if (s == NULL)
		s = slots_take_locked(dboid);
	LWLockRelease(slots_lock);
	return s;
}

/* gives a slot back when no worker runs there (see the header) */
void
anonymize_slot_free(AnonymizeWorkerShared *slot, bool force)
{
	LWLockAcquire(slots_lock, LW_EXCLUSIVE);
	SpinLockAcquire(&slot->mutex);
	if (slot->pid == 0 &&
		(force || !(slot->wake_requested || slot->start_requested)))
		slot->dboid = InvalidOid;
	SpinLockRelease(&slot->mutex);
	LWLockRelease(slots_lock);
}

/* wake() or CREATE EXTENSION: the worker's latch, else the launcher's */
bool
anonymize_slot_request(Oid dboid, bool wake)
{
	AnonymizeWorkerShared *s;
	Latch	   *latch = NULL;

	LWLockAcquire(slots_lock, LW_EXCLUSIVE);
	s = slots_find_locked(dboid);
	if (s == NULL)
		s = slots_take_locked(dboid);
	if (s != NULL)
	{
		SpinLockAcquire(&s->mutex);
		if (wake)
			s->wake_requested = true;
		else
			s->start_requested = true;
		latch = s->latch;
		SpinLockRelease(&s->mutex);
	}
	LWLockRelease(slots_lock);
	if (s == NULL)
		return false;
	if (latch)
		SetLatch(latch);
	else
		anonymize_launcher_wakeup();
	return true;
}

/* on the launcher's exit: nobody to wake */
static void
slots_launcher_on_exit(int code, Datum arg)
{
	SpinLockAcquire(&slots_header->mutex);
	slots_header->launcher_pid = 0;
	slots_header->launcher_latch = NULL;
	SpinLockRelease(&slots_header->mutex);
}

/* the launcher makes itself known */
void
anonymize_launcher_attach(void)
{
	SpinLockAcquire(&slots_header->mutex);
	slots_header->launcher_pid = MyProcPid;
	slots_header->launcher_latch = MyLatch;
	SpinLockRelease(&slots_header->mutex);
	on_shmem_exit(slots_launcher_on_exit, (Datum) 0);
}

/* sets the launcher's latch, if it runs */
void
anonymize_launcher_wakeup(void)
{
	Latch	   *latch;

	if (slots_header == NULL)
		return;
	SpinLockAcquire(&slots_header->mutex);
	latch = slots_header->launcher_latch;
	SpinLockRelease(&slots_header->mutex);
	if (latch)
		SetLatch(latch);
}

/* this backend holds the database: false when too many holds exist */
bool
anonymize_hold(Oid dboid)
{
	int			i;
	bool		held = false;

	LWLockAcquire(slots_lock, LW_EXCLUSIVE);
	for (i = 0; i < ANONYMIZE_MAX_HELD && !held; i++)
	{
		if (slots_header->held_by[i] == 0)
		{
			slots_header->held[i] = dboid;
			slots_header->held_by[i] = MyProcPid;
			held = true;
		}
	}
	LWLockRelease(slots_lock);
	return held;
}

/* this backend releases its hold of the database */
void
anonymize_release(Oid dboid)
{
	int			i;

	LWLockAcquire(slots_lock, LW_EXCLUSIVE);
	for (i = 0; i < ANONYMIZE_MAX_HELD; i++)
	{
		if (slots_header->held_by[i] == MyProcPid &&
			slots_header->held[i] == dboid)
		{
			slots_header->held[i] = InvalidOid;
			slots_header->held_by[i] = 0;
			break;
		}
	}
	LWLockRelease(slots_lock);
}

/* whether any backend holds the database */
bool
anonymize_held(Oid dboid)
{
	int			i;
	bool		held = false;

	LWLockAcquire(slots_lock, LW_SHARED);
	for (i = 0; i < ANONYMIZE_MAX_HELD; i++)
		if (slots_header->held_by[i] != 0 && slots_header->held[i] == dboid)
			held = true;
	LWLockRelease(slots_lock);
	return held;
}

/* holds of backends that exited without releasing them */
void
anonymize_release_orphans(void)
{
	int			i;

	LWLockAcquire(slots_lock, LW_EXCLUSIVE);
	for (i = 0; i < ANONYMIZE_MAX_HELD; i++)
	{
		pid_t		pid = slots_header->held_by[i];

		if (pid != 0 && BackendPidGetProc(pid) == NULL)
		{
			slots_header->held[i] = InvalidOid;
			slots_header->held_by[i] = 0;
		}
	}
	LWLockRelease(slots_lock);
}
