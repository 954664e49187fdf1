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
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "anonymize_settings.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	anonymize_settings_init();
}
