/*-------------------------------------------------------------------------
 *
 * anonymize_request.h
 *	  The Anonymize page (anonymize.anonymize_request): its rules, and how
 *	  the extension's own code writes to it past those rules.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ANONYMIZE_REQUEST_H
#define ANONYMIZE_REQUEST_H

/* Column numbers of anonymize.anonymize_request, as created in 1.0. */
#define Anum_request_id				1
#define Anum_request_phone			2
#define Anum_request_email			3
#define Anum_request_to_date		4
#define Anum_request_comment		5
#define Anum_request_archive		6
#define Anum_request_sms_survey		7
#define Anum_request_raw_data		8
#define Anum_request_status			9
#define Anum_request_user_name		10
#define Anum_request_created_at		11
#define Anum_request_done_at		12
#define Anum_request_rows_anonymized 13
#define Anum_request_error			14

/*
 * The page's trigger lets the portal change only Waiting rows and never the
 * run's columns.  The extension's own code (the run, confirm(), retention)
 * brackets its writes with these calls to be let through.  Nesting is
 * allowed; an error resets the state at transaction end.
 */
extern void anonymize_internal_write_begin(void);
extern void anonymize_internal_write_end(void);
extern bool anonymize_internal_write_active(void);

/*
 * The OIDs of the schema anonymize (error when missing), of the page and of
 * anonymize.request_private (InvalidOid when missing).  Call in a
 * transaction.
 */
extern void anonymize_request_relids(Oid *nsp, Oid *page, Oid *private);

#endif							/* ANONYMIZE_REQUEST_H */
