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

#endif							/* ANONYMIZE_COMPAT_H */
