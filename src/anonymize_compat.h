/*
 * anonymize_compat.h: every difference between the PostgreSQL versions
 * anonymize builds on (15, 16, 17 and 18), in one place.
 *
 * Include it after postgres.h in a file that uses one of the names below;
 * the .c files never test PG_VERSION_NUM themselves.
 */
#ifndef ANONYMIZE_COMPAT_H
#define ANONYMIZE_COMPAT_H

/*
 * 16 moved the varlena macros (VARSIZE_ANY_EXHDR, VARDATA, SET_VARSIZE...)
 * out of postgres.h into varatt.h.
 */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * 16 gave _bt_search() the heap relation and took away its snapshot
 * argument.  anonymize_bt_search(rel, heaprel, key, bufP) descends a btree
 * for reading and returns the stack of parent pages.
 */
#if PG_VERSION_NUM >= 160000
#define anonymize_bt_search(rel, heaprel, key, bufP) \
	_bt_search((rel), (heaprel), (key), (bufP), BT_READ)
#else
#define anonymize_bt_search(rel, heaprel, key, bufP) \
	_bt_search((rel), (key), (bufP), BT_READ, NULL)
#endif

/*
 * 17 replaced backend ids by proc numbers (an index into the PGPROC array,
 * BackendIdGetProc() by ProcNumberGetProc()), dropped PGPROC's pgprocno
 * field and moved its lxid into vxid.lxid.  run() keeps the caller's
 * backend to wait for its transaction to end, and the search cache the
 * local transaction id it was last checked in:
 *
 * AnonymizeBackend			a backend's id (15) or proc number (17)
 * anonymize_my_backend		this backend's
 * anonymize_backend_proc(b)	its PGPROC (NULL when none, 15 only)
 * anonymize_proc_number(p)	a PGPROC's index in ProcGlobal->allProcs
 * anonymize_proc_lxid(p)		a PGPROC's local transaction id
 */
#include "storage/proc.h"
#include "storage/procarray.h"
#if PG_VERSION_NUM >= 170000
#include "storage/procnumber.h"
typedef ProcNumber AnonymizeBackend;
#define anonymize_my_backend		MyProcNumber
#define anonymize_backend_proc(b)	ProcNumberGetProc(b)
#define anonymize_proc_number(p)	((int) GetNumberFromPGProc(p))
#define anonymize_proc_lxid(p)		((p)->vxid.lxid)
#else
#include "storage/backendid.h"
#include "storage/sinvaladt.h"
typedef BackendId AnonymizeBackend;
#define anonymize_my_backend		MyBackendId
#define anonymize_backend_proc(b)	BackendIdGetProc(b)
#define anonymize_proc_number(p)	((p)->pgprocno)
#define anonymize_proc_lxid(p)		((p)->lxid)
#endif

/*
 * The run's rewrite updates rows at the C level, as logical replication's
 * apply does (ExecSimpleRelationUpdate()):
 *
 * 16 moved a relation's permissions and updated columns out of its range
 * table entry into an RTEPermissionInfo (and computes the generated
 * columns to recompute from them; 15 reads them from extraUpdatedCols);
 * 18 gave ExecInitRangeTable() the relations left after pruning.
 * anonymize_exec_range_table(estate, rte, updated, generated) makes the
 * executor's range table of the one relation rte, updating the columns
 * updated (offset by FirstLowInvalidHeapAttributeNumber) and so the stored
 * generated columns generated.
 *
 * 16 made table_tuple_update() say which indexes need new entries
 * (TU_UpdateIndexes: none, all, or only the summarizing ones) instead of a
 * bool, and gave ExecInsertIndexTuples() the matching argument.
 * AnonymizeUpdateIndexes is what it says; anonymize_no_index_update(u)
 * whether no index needs one; anonymize_insert_index_tuples(rri, slot,
 * estate, u) inserts the entries of an updated row.
 */
#include "access/tableam.h"
#include "executor/executor.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
static inline void
anonymize_exec_range_table(EState *estate, RangeTblEntry *rte,
						   Bitmapset *updated, Bitmapset *generated)
{
	List	   *perminfos = NIL;
	RTEPermissionInfo *perminfo = addRTEPermissionInfo(&perminfos, rte);

	perminfo->updatedCols = updated;
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#else
	ExecInitRangeTable(estate, list_make1(rte), perminfos);
#endif
}
typedef TU_UpdateIndexes AnonymizeUpdateIndexes;
#define anonymize_no_index_update(u)	((u) == TU_None)
#define anonymize_insert_index_tuples(rri, slot, estate, u) \
	ExecInsertIndexTuples((rri), (slot), (estate), true, false, NULL, NIL, \
						  (u) == TU_Summarizing)
#else
static inline void
anonymize_exec_range_table(EState *estate, RangeTblEntry *rte,
						   Bitmapset *updated, Bitmapset *generated)
{
	rte->updatedCols = updated;
	rte->extraUpdatedCols = generated;
	ExecInitRangeTable(estate, list_make1(rte));
}
typedef bool AnonymizeUpdateIndexes;
#define anonymize_no_index_update(u)	(!(u))
#define anonymize_insert_index_tuples(rri, slot, estate, u) \
	ExecInsertIndexTuples((rri), (slot), (estate), true, false, NULL, NIL)
#endif

/*
 * 18 gave index_beginscan() an instrumentation argument.
 * anonymize_index_beginscan(heap, index, snapshot, nkeys) begins an index
 * scan with nkeys keys and no ordering.
 */
#include "access/genam.h"
#if PG_VERSION_NUM >= 180000
#define anonymize_index_beginscan(heap, index, snapshot, nkeys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), 0)
#else
#define anonymize_index_beginscan(heap, index, snapshot, nkeys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), 0)
#endif

#endif							/* ANONYMIZE_COMPAT_H */
