/*-------------------------------------------------------------------------
 *
 * pga_commands.c
 *	  pg_anonymize: the subcommands that are one or two statements each:
 *	  add, list, show, preview, cancel, confirm and status.  Identifiers
 *	  travel as parameters, never in the statement text, so that they do
 *	  not show in pg_stat_activity or in a logged statement.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_anonymize.h"

/* pg_anonymize add: file a request on the page. */
int
pga_cmd_add(PGconn *conn)
{
	bool		scoped = pga_opts.archive || pga_opts.sms_survey || pga_opts.raw_data;
	const char *params[8];
	PGresult   *res;

	params[0] = pga_opts.phone;
	params[1] = pga_opts.email;
	params[2] = pga_opts.to_date;
	params[3] = pga_opts.comment;
	params[4] = scoped ? (pga_opts.archive ? "true" : "false") : NULL;
	params[5] = scoped ? (pga_opts.sms_survey ? "true" : "false") : NULL;
	params[6] = scoped ? (pga_opts.raw_data ? "true" : "false") : NULL;
	params[7] = pga_opts.user_name;

	/* no scope ticked: the page's defaults (archive only) */
	res = pga_exec(conn,
				   "INSERT INTO anonymize.anonymize_request "
				   "(phone, email, to_date, comment, archive, sms_survey, raw_data, user_name) "
				   "VALUES ($1, $2, $3::date, $4, coalesce($5::boolean, true), "
				   "coalesce($6::boolean, false), coalesce($7::boolean, false), "
				   "coalesce($8, session_user)) "
				   "RETURNING id, status, to_char(to_date, 'YYYY-MM-DD')",
				   8, params);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	printf("request %s added: %s, to date %s\n",
		   PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
	PQclear(res);
	return PGA_EXIT_OK;
}

/* pg_anonymize list: the page as a table, maybe of one status. */
int
pga_cmd_list(PGconn *conn)
{
	const char *params[1] = {pga_opts.status};
	PGresult   *res;

	res = pga_exec(conn,
				   "SELECT id, phone, email, to_char(to_date, 'YYYY-MM-DD') AS \"to date\", "
				   "comment, "
				   "CASE WHEN archive THEN 'yes' ELSE 'no' END AS archive, "
				   "CASE WHEN sms_survey THEN 'yes' ELSE 'no' END AS \"sms survey\", "
				   "CASE WHEN raw_data THEN 'yes' ELSE 'no' END AS \"raw data\", "
				   "status, user_name AS \"user name\", "
				   "to_char(done_at, 'YYYY-MM-DD HH24:MI') AS done, "
				   "rows_anonymized AS rows, error "
				   "FROM anonymize.anonymize_request "
				   "WHERE $1::anonymize.request_status IS NULL "
				   "OR status = $1::anonymize.request_status "
				   "ORDER BY id",
				   1, params);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	pga_print_table(res, NULL);
	PQclear(res);
	return PGA_EXIT_OK;
}

/* The receipts of a request, oldest first, or NULL after an error. */
static PGresult *
pga_receipts(PGconn *conn, const char *id)
{
	const char *params[1] = {id};

	return pga_exec(conn,
					"SELECT to_char(logged_at, 'YYYY-MM-DD HH24:MI:SS') AS time, "
					"event, status, target, col AS column, rows, detail "
					"FROM anonymize.request_log WHERE request_id = $1::bigint "
					"ORDER BY logged_at, id",
					1, params);
}

/* pg_anonymize show ID: a request and its receipts. */
int
pga_cmd_show(PGconn *conn, const char *id)
{
	const char *params[1] = {id};
	PGresult   *res;
	PGresult   *receipts;
	bool		on_page;

	res = pga_exec(conn,
				   "SELECT id, phone, email, to_char(to_date, 'YYYY-MM-DD') AS \"to date\", "
				   "comment, "
				   "CASE WHEN archive THEN 'yes' ELSE 'no' END AS archive, "
				   "CASE WHEN sms_survey THEN 'yes' ELSE 'no' END AS \"sms survey\", "
				   "CASE WHEN raw_data THEN 'yes' ELSE 'no' END AS \"raw data\", "
				   "status, user_name AS \"user name\", "
				   "to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') AS created, "
				   "to_char(done_at, 'YYYY-MM-DD HH24:MI:SS') AS done, "
				   "rows_anonymized AS \"rows anonymized\", error "
				   "FROM anonymize.anonymize_request WHERE id = $1::bigint",
				   1, params);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	receipts = pga_receipts(conn, id);
	if (receipts == NULL)
	{
		PQclear(res);
		return PGA_EXIT_ERROR;
	}
	on_page = PQntuples(res) == 1;
	if (!on_page && PQntuples(receipts) == 0)
	{
		PQclear(res);
		PQclear(receipts);
		pga_error("anonymize request %s does not exist", id);
		pga_hint("Receipts of requests purged by anonymize.request_retention are kept per day in anonymize.request_log_daily.");
		return PGA_EXIT_ERROR;
	}
	if (on_page)
		pga_print_record(res, 0, NULL);
	else
		printf("request %s is no longer on the page: it was cancelled\n", id);
	if (PQntuples(receipts) > 0)
	{
		printf("\n");
		pga_print_table(receipts, "Receipts");
	}
	PQclear(res);
	PQclear(receipts);
	return PGA_EXIT_OK;
}

/* pg_anonymize preview ID: what the request would rewrite. */
int
pga_cmd_preview(PGconn *conn, const char *id)
{
	const char *params[1] = {id};
	PGresult   *res;
	long long	total = 0;

	res = pga_exec(conn,
				   "SELECT target, col AS column, rows "
				   "FROM anonymize.preview($1::bigint) ORDER BY 1, 2",
				   1, params);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	for (int r = 0; r < PQntuples(res); r++)
		total += atoll(PQgetvalue(res, r, 2));
	pga_print_table(res, NULL);
	printf("request %s would rewrite %lld %s\n", id, total, total == 1 ? "row" : "rows");
	PQclear(res);
	return PGA_EXIT_OK;
}

/* pg_anonymize cancel ID: delete a Waiting request. */
int
pga_cmd_cancel(PGconn *conn, const char *id)
{
	const char *params[1] = {id};
	PGresult   *res;
	int			n;

	res = pga_exec(conn,
				   "DELETE FROM anonymize.anonymize_request WHERE id = $1::bigint RETURNING id",
				   1, params);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	n = PQntuples(res);
	PQclear(res);
	if (n == 0)
	{
		pga_error("anonymize request %s does not exist", id);
		return PGA_EXIT_ERROR;
	}
	printf("request %s cancelled\n", id);
	return PGA_EXIT_OK;
}

/* pg_anonymize confirm ID: release a Held request. */
int
pga_cmd_confirm(PGconn *conn, const char *id)
{
	const char *params[1] = {id};
	PGresult   *res;

	res = pga_exec(conn, "SELECT anonymize.confirm($1::bigint)", 1, params);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	PQclear(res);
	printf("request %s confirmed: the next run applies it\n", id);
	return PGA_EXIT_OK;
}

/* pg_anonymize status: the worker, the schedule and the last run. */
int
pga_cmd_status(PGconn *conn)
{
	PGresult   *res;

	res = pga_exec(conn,
				   "SELECT s.worker_state || coalesce(' (pid ' || s.worker_pid || ')', '') "
				   "       || coalesce(', serving database ' || (to_jsonb(s) ->> 'worker_database'), "
				   "                   ', anonymize.database = ' || s.database) AS worker, "
				   "CASE WHEN s.enabled THEN 'daily at ' || s.run_at "
				   "     ELSE 'off (anonymize.enabled = off): runs only on run() or wake()' END "
				   "  || CASE WHEN s.wake_pending THEN ', wake() pending' ELSE '' END AS schedule, "
				   "coalesce(to_char(s.next_run, 'YYYY-MM-DD HH24:MI TZ'), '-') AS \"next run\", "
				   "coalesce(s.activity, 'idle') AS now, "
				   "coalesce((SELECT string_agg(a.query || ' (pid ' || a.pid || ')', '; ' ORDER BY a.pid) "
				   "          FROM pg_catalog.pg_stat_activity a "
				   "          WHERE a.backend_type = 'anonymize run()' AND a.state = 'active'), "
				   "         'none') AS \"run() now\", "
				   "CASE WHEN r.id IS NOT NULL THEN "
				   "  'run ' || r.id || ', ' || to_char(r.started_at, 'YYYY-MM-DD HH24:MI:SS') "
				   "  || ' (' || r.trigger || '), ' || r.outcome "
				   "  || coalesce(' in ' || round(extract(epoch FROM r.finished_at - r.started_at)::numeric, 1) || ' s', '') "
				   "  || ': ' || r.requests_done || ' done, ' || r.requests_held || ' held, ' "
				   "  || r.requests_failed || ' failed, ' || r.rows_rewritten || ' rows rewritten' "
				   "  || coalesce(' (' || r.error || ')', '') "
				   "WHEN s.last_started IS NOT NULL THEN "
				   "  to_char(s.last_started, 'YYYY-MM-DD HH24:MI:SS') "
				   "  || coalesce(' (' || s.last_trigger || ')', '') || ', ' "
				   "  || coalesce(s.last_outcome, 'running') "
				   "ELSE 'none' END AS \"last run\" "
				   "FROM anonymize.status() s "
				   "LEFT JOIN LATERAL (SELECT * FROM anonymize.runs ORDER BY id DESC LIMIT 1) r ON true",
				   0, NULL);
	if (res == NULL)
		return PGA_EXIT_ERROR;
	if (PQntuples(res) > 0)
		pga_print_record(res, 0, NULL);
	PQclear(res);
	return PGA_EXIT_OK;
}
