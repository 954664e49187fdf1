/*-------------------------------------------------------------------------
 *
 * pga_run.c
 *	  pg_anonymize run: calls anonymize.run() on one connection and, while
 *	  it works, watches its progress from a second one (the activity the
 *	  run reports in pg_stat_activity).  On a terminal the progress is a
 *	  bar redrawn in place; otherwise one plain line per change, so that a
 *	  log or a pipe reads well.  Ends with a summary from anonymize.runs.
 *
 *-------------------------------------------------------------------------
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <unistd.h>

#include "pg_anonymize.h"

static volatile sig_atomic_t pga_interrupted = 0;

/* SIGINT and SIGTERM: cancel the run at the next poll */
static void
pga_sigint(int signo)
{
	(void) signo;
	pga_interrupted = 1;
}

/*
 * The run's current activity: what the process doing the run reports in
 * pg_stat_activity, its text starting with "anonymize".  run() hands the
 * work to a background worker that joins the caller's lock group, so that
 * worker is the one whose leader_pid is our run connection; failing that
 * (another run holds the run lock), any anonymize background process.
 */
static char *
pga_activity(PGconn *watch, const char *run_pid, bool *ours)
{
	const char *params[1] = {run_pid};
	PGresult   *res;
	char	   *text = NULL;

	res = PQexecParams(watch,
					   "SELECT query, coalesce(pid = $1::int OR leader_pid = $1::int, false) "
					   "FROM pg_catalog.pg_stat_activity "
					   "WHERE pid <> pg_catalog.pg_backend_pid() "
					   "AND query LIKE 'anonymize%' "
					   "AND (pid = $1::int OR backend_type <> 'client backend') "
					   "AND state = 'active' "
					   "ORDER BY pid = $1::int OR leader_pid = $1::int DESC, "
					   "backend_start DESC LIMIT 1",
					   1, NULL, params, NULL, NULL, 0);
	*ours = false;
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
	{
		text = strdup(PQgetvalue(res, 0, 0));
		*ours = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	}
	PQclear(res);
	return text;
}

/*
 * A fraction of work done, read from an activity text: the last "N of M"
 * or "N/M" in it.  Returns -1 when there is none.
 */
static double
pga_fraction(const char *text)
{
	double		result = -1;

	for (const char *p = text; *p; p++)
	{
		long long	n,
					m;
		int			used = 0;

		if (*p < '0' || *p > '9' || (p > text && p[-1] >= '0' && p[-1] <= '9'))
			continue;
		if ((sscanf(p, "%lld of %lld%n", &n, &m, &used) == 2 ||
			 sscanf(p, "%lld/%lld%n", &n, &m, &used) == 2) &&
			used > 0 && m > 0 && n >= 0 && n <= m)
			result = (double) n / (double) m;
	}
	return result;
}

/* The terminal's width in columns, 80 when unknown. */
static int
pga_term_width(void)
{
	struct winsize ws;

	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
		return ws.ws_col;
	return 80;
}

/* redraw the bar line: [#####.....]  45% activity */
static void
pga_draw_bar(const char *activity, double fraction, int tick)
{
	static const char spin[] = "|/-\\";
	int			width = pga_term_width();
	int			barw = 30;
	int			room;
	char		line[1024];
	int			len;

	if (fraction >= 0)
	{
		int			filled = (int) (fraction * barw + 0.5);

		len = snprintf(line, sizeof(line), "[%.*s%.*s] %3d%% ",
					   filled, "##############################",
					   barw - filled, "..............................",
					   (int) (fraction * 100 + 0.5));
	}
	else
		len = snprintf(line, sizeof(line), "[%c] ", spin[tick % 4]);
	room = width - 1 - len;
	if (room > 0 && activity)
		snprintf(line + len, sizeof(line) - len, "%.*s", room, activity);
	printf("\r%-*s", width - 1, line);
	fflush(stdout);
}

/*
 * The run id in an activity text ("anonymize run 12: ..."), or 0.
 */
static long long
pga_run_id(const char *text)
{
	long long	id = 0;

	if (text && sscanf(text, "anonymize run %lld:", &id) == 1 && id > 0)
		return id;
	return 0;
}

/*
 * The summary of the run that just finished, from anonymize.runs: the run
 * seen in the progress, else the latest run() run.  Sets *unfinished when
 * the run held or failed a request.
 */
static int
pga_summary(PGconn *conn, const char *finished, long long run_id, bool *unfinished)
{
	PGresult   *res;
	char		idbuf[32];
	const char *params[1] = {idbuf};

	snprintf(idbuf, sizeof(idbuf), "%lld", run_id);
	res = pga_exec(conn,
				   "SELECT id, outcome, requests_done, requests_held, requests_failed, "
				   "rows_rewritten, "
				   "round(extract(epoch FROM finished_at - started_at)::numeric, 1), "
				   "error "
				   "FROM anonymize.runs "
				   "WHERE CASE WHEN $1::bigint > 0 THEN id = $1::bigint ELSE trigger = 'run()' END "
				   "ORDER BY id DESC LIMIT 1",
				   1, params);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	if (PQntuples(res) == 0)
	{
		printf("run finished: %s %s done\n", finished,
			   strcmp(finished, "1") == 0 ? "request" : "requests");
		PQclear(res);
		return PGA_EXIT_OK;
	}
	printf("run %s %s: %s done, %s held, %s failed, %s rows rewritten in %s s\n",
		   PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
		   PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4),
		   PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 6));
	if (!PQgetisnull(res, 0, 7))
		printf("error: %s\n", PQgetvalue(res, 0, 7));
	*unfinished = atoll(PQgetvalue(res, 0, 3)) > 0 || atoll(PQgetvalue(res, 0, 4)) > 0;
	PQclear(res);
	return PGA_EXIT_OK;
}

/* what the progress display knows while run() works */
typedef struct PgaRunWatch
{
	bool		tty;			/* redraw a bar in place */
	bool		show;			/* show progress at all */
	PGconn	   *watch;			/* the second connection, or NULL */
	char		run_pid[16];	/* the backend PID of the run connection */
	char	   *shown;			/* the activity shown last */
	bool		drawn;			/* a bar is on the line */
	bool		cancel_sent;
	long long	run_id;			/* the run seen in the activity, or 0 */
	int			tick;
} PgaRunWatch;

/* Catch SIGINT and SIGTERM: the run is cancelled, not the client killed. */
static void
pga_run_catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = pga_sigint;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* After ^C: ask the server to cancel run(), once. */
static void
pga_run_cancel(PGconn *conn, PgaRunWatch *w)
{
	PGcancel   *cancel = PQgetCancel(conn);
	char		errbuf[256];

	if (cancel)
	{
		PQcancel(cancel, errbuf, sizeof(errbuf));
		PQfreeCancel(cancel);
	}
	w->cancel_sent = true;
	if (w->drawn)
		printf("\n");
	w->drawn = false;
	fprintf(stderr, "%s: cancel requested\n", progname);
}

/*
 * Wait for run()'s answer at most one interval; false once it is there
 * (or the connection is gone).
 */
static bool
pga_run_busy(PGconn *conn)
{
	int			sock = PQsocket(conn);
	fd_set		fds;
	struct timeval tv;

	if (sock < 0)
		return false;
	FD_ZERO(&fds);
	FD_SET(sock, &fds);
	tv.tv_sec = (long) pga_opts.interval;
	tv.tv_usec = (long) ((pga_opts.interval - (double) tv.tv_sec) * 1e6);
	if (select(sock + 1, &fds, NULL, NULL, &tv) > 0 && !PQconsumeInput(conn))
		return false;
	return PQisBusy(conn) != 0;
}

/* Show the run's current activity: redraw the bar, or print a new line. */
static void
pga_run_show_progress(PgaRunWatch *w)
{
	bool		ours;
	char	   *activity = pga_activity(w->watch, w->run_pid, &ours);

	w->tick++;
	if (w->tty)
	{
		if (activity || w->shown)
			pga_draw_bar(activity ? activity : w->shown,
						 pga_fraction(activity ? activity : w->shown), w->tick);
		w->drawn = w->drawn || activity || w->shown;
	}
	else if (activity && (w->shown == NULL || strcmp(activity, w->shown) != 0))
	{
		printf("progress: %s\n", activity);
		fflush(stdout);
	}
	if (activity && ours && w->run_id == 0)
		w->run_id = pga_run_id(activity);
	if (activity)
	{
		free(w->shown);
		w->shown = activity;
	}
}

/*
 * The result of run(), the last error one winning: *finished gets the
 * number of requests it finished; false after printing the error.
 */
static bool
pga_run_result(PGconn *conn, bool cancel_sent, char **finished)
{
	PGresult   *res;
	PGresult   *last = NULL;

	while ((res = PQgetResult(conn)) != NULL)
	{
		if (last)
			PQclear(last);
		last = res;
	}
	if (last == NULL)
	{
		pga_error("%s", PQerrorMessage(conn));
		return false;
	}
	if (PQresultStatus(last) != PGRES_TUPLES_OK)
	{
		const char *state = PQresultErrorField(last, PG_DIAG_SQLSTATE);

		pga_report_result_error(last);
		if (cancel_sent && state && strcmp(state, "57014") == 0)
			pga_hint("A run that had started goes on in the background; \"%s status\" shows it.",
					 progname);
		PQclear(last);
		return false;
	}
	*finished = strdup(PQgetvalue(last, 0, 0));
	PQclear(last);
	return true;
}

/* pg_anonymize run: run() with its progress, then the run's summary. */
int
pga_cmd_run(PGconn *conn)
{
	PgaRunWatch w;
	char	   *finished;
	bool		unfinished = false;
	int			rc;

	memset(&w, 0, sizeof(w));
	w.tty = isatty(STDOUT_FILENO) && !pga_opts.no_progress;
	w.show = !pga_opts.no_progress;
	snprintf(w.run_pid, sizeof(w.run_pid), "%d", PQbackendPID(conn));
	if (w.show)
		w.watch = pga_connect();
	pga_run_catch_signals();

	if (!PQsendQuery(conn, "SELECT anonymize.run()"))
	{
		pga_error("%s", PQerrorMessage(conn));
		return PGA_EXIT_ERROR;
	}
	if (!w.tty && w.show)
		printf("run started\n");
	fflush(stdout);

	for (;;)
	{
		if (pga_interrupted && !w.cancel_sent)
			pga_run_cancel(conn, &w);
		if (!pga_run_busy(conn))
			break;
		if (w.show && !pga_interrupted)
			pga_run_show_progress(&w);
	}
	if (w.drawn)
	{
		pga_draw_bar(NULL, 1.0, w.tick);
		printf("\n");
	}
	free(w.shown);
	if (w.watch)
		PQfinish(w.watch);

	if (!pga_run_result(conn, w.cancel_sent, &finished))
		return PGA_EXIT_ERROR;
	rc = pga_summary(conn, finished ? finished : "?", w.run_id, &unfinished);
	free(finished);
	if (rc == PGA_EXIT_OK && unfinished)
		rc = PGA_EXIT_HELD;
	return rc;
}
