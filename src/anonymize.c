/*-------------------------------------------------------------------------
 *
 * anonymize.c
 *	  Module entry point of the anonymize extension: declares the settings
 *	  and, when loaded through shared_preload_libraries, the launcher of the
 *	  background workers and the hook that keeps them out of the way of
 *	  DROP DATABASE.
 *
 * What each part does lives in a file of its own:
 *	  anonymize_settings.c		anonymize.* settings
 *	  anonymize_normalize*.c	canonical phone numbers and emails
 *	  anonymize_mask*.c			masks
 *	  anonymize_request.c		the rules of the Anonymize page
 *	  anonymize_digest.c		keyed digests of identifiers
 *	  anonymize_schedule.c		instants of the daily run
 *	  anonymize_launcher.c		the launcher: one worker per database served
 *	  anonymize_slots.c			the workers' shared memory
 *	  anonymize_utility.c		workers out of the way of DROP DATABASE
 *	  anonymize_worker.c		a database's background worker
 *	  anonymize_worker_sql.c	wake() and status()
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "anonymize_settings.h"
#include "anonymize_utility.h"
#include "anonymize_worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	anonymize_settings_init();

	/* the launcher, its workers and their shared memory only when preloaded */
	if (process_shared_preload_libraries_in_progress)
	{
		anonymize_launcher_register();
		anonymize_utility_install();
	}
}
