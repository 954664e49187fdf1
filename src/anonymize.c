/*-------------------------------------------------------------------------
 *
 * anonymize.c
 *	  Module entry point of the anonymize extension: declares the settings
 *	  and, when loaded through shared_preload_libraries, the background
 *	  worker.
 *
 * What each part does lives in a file of its own:
 *	  anonymize_settings.c		anonymize.* settings
 *	  anonymize_normalize*.c	canonical phone numbers and emails
 *	  anonymize_mask*.c			masks
 *	  anonymize_request.c		the rules of the Anonymize page
 *	  anonymize_digest.c		keyed digests of identifiers
 *	  anonymize_schedule.c		instants of the daily run
 *	  anonymize_worker.c		the background worker and its shared memory
 *	  anonymize_worker_sql.c	wake() and status()
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "anonymize_settings.h"
#include "anonymize_worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Module load: the settings, and the worker when preloaded. */
void
_PG_init(void)
{
	anonymize_settings_init();

	/* the worker and its shared memory exist only when preloaded */
	if (process_shared_preload_libraries_in_progress)
		anonymize_worker_register();
}
