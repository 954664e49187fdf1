/*-------------------------------------------------------------------------
 *
 * anonymize.c
 *	  Module entry point of the anonymize extension: declares the settings
 *	  and, when loaded through shared_preload_libraries, the launcher of the
 *	  background workers and the hook that keeps them out of the way of
 *	  DROP DATABASE.
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
#include "anonymize_utility.h"
#include "anonymize_worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Module load: the settings, and when preloaded the launcher and the hook. */
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
