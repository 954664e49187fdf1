/*-------------------------------------------------------------------------
 *
 * pga_conn.c
 *	  pg_anonymize: connecting as psql does (-h -p -U -d, a conninfo string
 *	  or URI as -d, the PG* environment, a password prompt), running
 *	  statements, and reporting errors the way PostgreSQL's clients do:
 *	  "progname: error: message", then "detail:" and "hint:" lines with the
 *	  server's own fields, nothing else.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "pg_anonymize.h"

static void pga_vmessage(const char *level, const char *fmt, va_list ap)
			__attribute__((format(printf, 2, 0)));

/* "pg_anonymize: level: message" on stderr, one newline at the end. */
static void
pga_vmessage(const char *level, const char *fmt, va_list ap)
{
	char		buf[4096];
	size_t		len;

	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* libpq messages end with a newline: drop it, we add our own */
	len = strlen(buf);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	fprintf(stderr, "%s: %s: %s\n", progname, level, buf);
}

/* "pg_anonymize: error: ..." */
void
pga_error(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	pga_vmessage("error", fmt, ap);
	va_end(ap);
}

/* "pg_anonymize: detail: ..." */
void
pga_detail(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	pga_vmessage("detail", fmt, ap);
	va_end(ap);
}

/* "pg_anonymize: hint: ..." */
void
pga_hint(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	pga_vmessage("hint", fmt, ap);
	va_end(ap);
}

/* The server's message, detail and hint of a failed result. */
void
pga_report_result_error(const PGresult *res)
{
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (msg == NULL)
	{
		/*
		 * Not from the server: a lost connection, say.  libpq's message is
		 * its first line and the tab-indented lines under it; what follows
		 * is the noise of later calls on the dead connection.
		 */
		const char *text = PQresultErrorMessage(res);
		const char *end = strchr(text, '\n');

		while (end != NULL && end[1] == '\t')
			end = strchr(end + 1, '\n');
		pga_error("%.*s", end ? (int) (end - text) : (int) strlen(text), text);
		return;
	}
	if (pga_opts.verbose && state != NULL)
		pga_error("%s (SQLSTATE %s)", msg, state);
	else
		pga_error("%s", msg);
	if (detail)
		pga_detail("%s", detail);
	if (hint)
		pga_hint("%s", hint);
}

/*
 * Run one statement with text parameters.  Returns the result when it
 * succeeded; reports the error and returns NULL when it did not.
 */
PGresult *
pga_exec(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
		return res;
	pga_report_result_error(res);
	PQclear(res);
	return NULL;
}

/* A request id: digits only, at most 18 of them. */
bool
pga_parse_id(const char *s, const char **id)
{
	size_t		n = strlen(s);

	if (n == 0 || n > 18 || strspn(s, "0123456789") != n)
	{
		pga_error("invalid request id \"%s\"", s);
		pga_hint("A request id is the number in the id column of \"%s list\".",
				 progname);
		return false;
	}
	*id = s;
	return true;
}

/* Read a password from the terminal without echo. */
static char *
pga_prompt_password(void)
{
	static char buf[1024];
	FILE	   *in = fopen("/dev/tty", "r");
	FILE	   *out = fopen("/dev/tty", "w");
	struct termios t,
				saved;
	bool		restore = false;
	size_t		len;

	if (in == NULL || out == NULL)
	{
		if (in)
			fclose(in);
		if (out)
			fclose(out);
		in = stdin;
		out = stderr;
	}
	fputs("Password: ", out);
	fflush(out);
	if (tcgetattr(fileno(in), &t) == 0)
	{
		saved = t;
		t.c_lflag &= ~ECHO;
		restore = tcsetattr(fileno(in), TCSAFLUSH, &t) == 0;
	}
	if (fgets(buf, sizeof(buf), in) == NULL)
		buf[0] = '\0';
	if (restore)
		tcsetattr(fileno(in), TCSAFLUSH, &saved);
	fputs("\n", out);
	fflush(out);
	len = strlen(buf);
	if (len > 0 && buf[len - 1] == '\n')
		buf[len - 1] = '\0';
	if (in != stdin)
	{
		fclose(in);
		fclose(out);
	}
	return buf;
}

/*
 * Connect as psql does: -d may be a database name, a conninfo string or a
 * URI (expand_dbname); what is not given comes from the PG* environment
 * and libpq's defaults.  Exits with PGA_EXIT_USAGE when it cannot connect.
 */
PGconn *
pga_connect(void)
{
	const char *keywords[8];
	const char *values[8];
	char	   *password = NULL;
	PGconn	   *conn;

	if (pga_opts.prompt_password > 0)
		password = pga_prompt_password();

	for (;;)
	{
		int			i = 0;

		keywords[i] = "host";
		values[i++] = pga_opts.host;
		keywords[i] = "port";
		values[i++] = pga_opts.port;
		keywords[i] = "user";
		values[i++] = pga_opts.user;
		keywords[i] = "password";
		values[i++] = password;
		keywords[i] = "dbname";
		values[i++] = pga_opts.dbname;
		keywords[i] = "fallback_application_name";
		values[i++] = progname;
		keywords[i] = NULL;
		values[i] = NULL;

		conn = PQconnectdbParams(keywords, values, 1);
		if (conn == NULL)
		{
			pga_error("out of memory");
			exit(PGA_EXIT_USAGE);
		}
		if (PQstatus(conn) == CONNECTION_BAD && PQconnectionNeedsPassword(conn) &&
			password == NULL && pga_opts.prompt_password == 0 && isatty(fileno(stdin)))
		{
			PQfinish(conn);
			password = pga_prompt_password();
			continue;
		}
		break;
	}

	if (PQstatus(conn) == CONNECTION_BAD)
	{
		pga_error("%s", PQerrorMessage(conn));
		PQfinish(conn);
		exit(PGA_EXIT_USAGE);
	}
	if (password)
		memset(password, 0, strlen(password));
	return conn;
}
