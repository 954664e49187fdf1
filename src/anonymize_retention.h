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

#include "nodes/pg_list.h"
#include "utils/guc.h"

extern char *anonymize_request_retention;
extern char *anonymize_sms_survey_retention;

/* GUC check hook of both settings: empty, or a positive interval */
extern bool anonymize_check_retention(char **newval, void **extra,
									  GucSource source);

/*
 * Both run in the caller's transaction (SPI) and return what they did:
 * requests purged, rows anonymized; the second adds the OIDs of the tables
 * it rewrote to *touched when that is not NULL.  Nothing happens when the
 * setting is empty.
 */
extern int64 anonymize_purge_requests(void);
extern int64 anonymize_sms_survey_retention_execute(List **touched);

/*
 * The run's last step, called outside a transaction by
 * anonymize_run_execute_ext() before it records and vacuums: each part in
 * a transaction of its own.  Appends the OIDs of the tables whose answers
 * it rewrote to *touched (in cxt), so that the run vacuums them (the run
 * vacuums the page anyway).  An error is logged, not raised.
 */
extern void anonymize_retention_run(List **touched, MemoryContext cxt);

#endif							/* ANONYMIZE_RETENTION_H */
