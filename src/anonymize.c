/*-------------------------------------------------------------------------
 *
 * anonymize.c
 *	  Module entry point of the anonymize extension: declares the settings
 *	  and, when loaded through shared_preload_libraries, the background
 *	  worker.
 *
 * How the parts fit together (the engine, the run and its phases, the
 * workers, the search cache, digests, retention) and what each file
 * holds: src/README.md.
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
