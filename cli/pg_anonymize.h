/*-------------------------------------------------------------------------
 *
 * pg_anonymize.h
 *	  Shared declarations of pg_anonymize, the command-line client of the
 *	  anonymize extension: options, exit codes, connection and printing
 *	  helpers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_ANONYMIZE_H
#define PG_ANONYMIZE_H

#include <stdbool.h>

#include "libpq-fe.h"

#define PGA_VERSION "1.1"

/* exit codes, documented in --help and README.md */
#define PGA_EXIT_OK			0	/* done */
#define PGA_EXIT_ERROR		1	/* the server reported an error, or no such request */
#define PGA_EXIT_USAGE		2	/* bad usage, or could not connect */
#define PGA_EXIT_HELD		3	/* run: finished, but a request is Held or Failed */

typedef struct PgaOptions
{
	/* connection */
	const char *host;
	const char *port;
	const char *user;
	const char *dbname;
	int			prompt_password;	/* 0 when needed, -1 never (-w), 1 always (-W) */
	bool		verbose;

	/* add */
	const char *phone;
	const char *email;
	const char *to_date;
	const char *comment;
	const char *user_name;
	bool		archive;
	bool		sms_survey;
	bool		raw_data;

	/* list */
	const char *status;

	/* run */
	bool		no_progress;
	double		interval;		/* seconds between progress polls */
} PgaOptions;

extern const char *progname;
extern PgaOptions pga_opts;

/* pga_conn.c */
extern PGconn *pga_connect(void);
extern void pga_report_result_error(const PGresult *res);
extern void pga_error(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern void pga_detail(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern void pga_hint(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern PGresult *pga_exec(PGconn *conn, const char *sql, int nparams,
						  const char *const *params);
extern bool pga_parse_id(const char *s, const char **id);

/* pga_print.c */
extern void pga_print_table(const PGresult *res, const char *title);
extern void pga_print_record(const PGresult *res, int row, const char *title);

/* pga_commands.c */
extern int	pga_cmd_add(PGconn *conn);
extern int	pga_cmd_list(PGconn *conn);
extern int	pga_cmd_show(PGconn *conn, const char *id);
extern int	pga_cmd_preview(PGconn *conn, const char *id);
extern int	pga_cmd_cancel(PGconn *conn, const char *id);
extern int	pga_cmd_confirm(PGconn *conn, const char *id);
extern int	pga_cmd_status(PGconn *conn);

/* pga_ledger.c: action "export" or "import" */
extern int	pga_cmd_ledger(PGconn *conn, const char *action, const char *path);

/* pga_run.c */
extern int	pga_cmd_run(PGconn *conn);

#endif							/* PG_ANONYMIZE_H */
