/*-------------------------------------------------------------------------
 *
 * anonymize_utility.h
 *	  The ProcessUtility_hook that stops a database's worker before DROP
 *	  DATABASE and the like, and tells the launcher about CREATE EXTENSION.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_UTILITY_H
#define ANONYMIZE_UTILITY_H

/* from _PG_init at preload */
extern void anonymize_utility_install(void);

#endif							/* ANONYMIZE_UTILITY_H */
