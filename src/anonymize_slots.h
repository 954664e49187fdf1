/*-------------------------------------------------------------------------
 *
 * anonymize_slots.h
 *	  The shared memory of the launcher and of the per-database workers:
 *	  one slot per database served, the launcher's latch, and the databases
 *	  held by a DROP DATABASE (or a statement like it) while it runs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_SLOTS_H
#define ANONYMIZE_SLOTS_H

#include "anonymize_worker.h"

/* at most this many DROP/ALTER/CREATE DATABASE statements hold at once */
#define ANONYMIZE_MAX_HELD 32

/* true once the module was preloaded and shared memory exists */
extern bool anonymize_slots_ready(void);

/* from _PG_init at preload: ask for the shared memory */
extern void anonymize_slots_request(void);

/* number of slots: max_worker_processes */
extern int	anonymize_slots_count(void);
extern AnonymizeWorkerShared *anonymize_slot_at(int index);

/* the slot of a database, or NULL */
extern AnonymizeWorkerShared *anonymize_slot_find(Oid dboid);

/* the slot of a database, taken when it has none; NULL when all are used */
extern AnonymizeWorkerShared *anonymize_slot_get(Oid dboid);

/*
 * Gives a slot back, unless a worker runs in it, or (without force) a
 * wake() or CREATE EXTENSION asks for one there.
 */
extern void anonymize_slot_free(AnonymizeWorkerShared *slot, bool force);

/*
 * Asks the database's worker to run now (wake) or asks the launcher for a
 * worker there (start); the launcher is woken when there is no worker.
 * false when no slot is free.
 */
extern bool anonymize_slot_request(Oid dboid, bool wake);

/* the launcher: who it is, and waking it */
extern void anonymize_launcher_attach(void);
extern void anonymize_launcher_wakeup(void);

/* DROP DATABASE and the like: no worker in that database meanwhile */
extern bool anonymize_hold(Oid dboid);
extern void anonymize_release(Oid dboid);
extern bool anonymize_held(Oid dboid);

/* the launcher forgets holds of backends that are gone */
extern void anonymize_release_orphans(void);

#endif							/* ANONYMIZE_SLOTS_H */
