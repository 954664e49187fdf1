/*-------------------------------------------------------------------------
 *
 * anonymize_retention.h
 *	  Retention, done by the nightly run after its requests: Done requests
 *	  older than anonymize.request_retention leave the page (their receipts
 *	  kept as per-day counts), and SMS-survey answers older than
 *	  anonymize.sms_survey_retention are anonymized.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_RETENTION_H
#define ANONYMIZE_RETENTION_H

#include "utils/guc.h"

extern char *anonymize_request_retention;
extern char *anonymize_sms_survey_retention;

/* GUC check hook of both settings: empty, or a positive interval */
extern bool anonymize_check_retention(char **newval, void **extra,
									  GucSource source);

/*
 * Both run in the caller's transaction (SPI), may be called from a
 * background worker's transaction, and return what they did: requests
 * purged, rows anonymized.  Nothing happens when the setting is empty.
 */
extern int64 anonymize_purge_requests(void);
extern int64 anonymize_sms_survey_retention_execute(void);

#endif							/* ANONYMIZE_RETENTION_H */
