#!/usr/bin/env bash
# tools/demo.sh: the anonymize demo, a story told on a terminal.
#
# Installs what is missing, builds and installs the extension and its
# command line, pg_anonymize, into a private copy of PostgreSQL 15, starts
# a throwaway cluster with a database "archive", builds a synthetic archive
# of about 220,000 contacts (tools/demo.sql, on the README's example
# tables of doc/example-archive.sql),
# then does what a DBA does: files requests with pg_anonymize, previews
# them, runs the erasure with its progress, reads the receipts and the
# worker's status, and shows the archive before and after in SQL.  The
# cluster is removed at the end.  Safe to run again; takes under a minute.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ensure_deps
work=$(mktemp -d /tmp/anonymize-demo.XXXXXX)
chmod 755 "$work"
port=$(free_port)
trap 'stop_cluster "$work/cluster"; rm -rf "$work"' EXIT

stage_tree "$work/src"
private_pg "$work/pg"
build_install "$work/src"
log "starting a throwaway cluster on port $port"
start_cluster "$work/cluster" "$port" \
	"anonymize.database = 'archive'" \
	"anonymize.country_code = '47'" \
	"anonymize.timezone = 'Europe/Oslo'" \
	"timezone = 'Europe/Oslo'"
as_pg createdb archive
# the worker serves "archive", which did not exist when it started
as_pg pg_ctl -D "$work/cluster/data" -l "$work/cluster/server.log" -w restart >/dev/null
export PGDATABASE=archive

# the story: headings, a word of explanation, the command as typed, its output
heading() { printf '\n\033[1;34m## %s\033[0m\n' "$1"; }
say() { printf '%s\n' "$@"; }
# show a command as a person would type it, then run it
pga() {
	local shown=pg_anonymize a
	for a in "$@"; do
		case $a in
		--*=*[\ \']*) shown+=" ${a%%=*}=\"${a#*=}\"" ;;
		*) shown+=" $a" ;;
		esac
	done
	printf '\n\033[1m$ %s\033[0m\n' "${shown/pg_anonymize/pg_anonymize -d archive}"
	as_pg pg_anonymize "$@" 2>&1
}
sql() { as_pg psql -X -q -v ON_ERROR_STOP=1 -P pager=off -P footer=off -P null=- "$@"; }

say "" "anonymize makes a contact-centre archive forget a person: requests filed on a" \
	"page, erased every night by a background worker, with receipts.  This demo" \
	"runs on a throwaway cluster; everything below is what a DBA would type."
heading "1. The archive: calls, chats, emails, SMS-survey answers and raw events (synthetic)"
say "The extension is installed in the archive database, and the five columns" \
	"that hold phone numbers and email addresses are registered as targets."
sql -f "$work/src/tools/demo.sql"

heading "2. The administrator files requests (the portal's Archive - Anonymize page)"
say "Each names a phone number and/or an email, a date (inclusive) and the scopes."
pga add --phone=555551 --to-date=2023-12-15 --comment="Paal's test phone"
pga add --phone=004798765 --email=bob.test@mytest.no --to-date=2024-02-21 --comment='New test' --archive --raw-data
pga add --phone=004612345678 --to-date=2024-01-31 --comment='Erik, Sweden' --archive --sms-survey
pga add --email=user42@example.com --to-date=2024-12-31 --comment='chat user 42'
pga add --phone=22222222 --to-date=2024-12-31 --comment='Acme AS shared line, their DPO asked'
say "" "A typo is refused with the server's own message and hint, and nothing is stored:"
pga add --phone='98-76 5abc' --comment=typo || say "(exit $?)"
pga list

heading "3. The archive before: every row of the people who asked"
say "Numbers are stored the way different systems write them; all match by their canonical form."
sql <<'SQL'
SELECT 'calls' AS "table", caller AS identifier, started_at::text AS "when", recording AS kept
FROM archive.calls WHERE caller ~ '(555551|98765|12 ?345 ?678)' UNION ALL
SELECT 'chats', chatter_id, started_at::text, log FROM archive.chats
WHERE chatter_id ~* '(bob\.test|98765)' UNION ALL
SELECT 'emails', from_address, received_on::text, subject FROM archive.emails WHERE from_address ~* 'bob\.test' UNION ALL
SELECT 'sms', number, answered_at::text, score::text FROM sms.answers WHERE number ~ '(98765|12345678)' UNION ALL
SELECT 'events', number, at::text, event FROM raw.events WHERE number ~ '(98765|12345678)'
ORDER BY 1, 3;
SQL

heading "4. Preview: what a request would rewrite, changing nothing"
pga preview 2
pga preview 3

heading "5. The run: every due request in one pass over each target"
say "The worker does this every night at 02:00; pg_anonymize run does it now and" \
	"shows its progress (a bar on a terminal, plain lines in a log)." \
	"For scale, one sequential scan of the whole archive:"
sql <<'SQL'
\timing on
SELECT (SELECT count(*) FROM archive.calls WHERE caller LIKE '%x%')
     + (SELECT count(*) FROM archive.chats WHERE chatter_id LIKE '%x%')
     + (SELECT count(*) FROM archive.emails WHERE from_address LIKE '%x%')
     + (SELECT count(*) FROM sms.answers WHERE number LIKE '%x%')
     + (SELECT count(*) FROM raw.events WHERE number LIKE '%x%') AS "one scan of every target";
SQL
pga run --interval=0.1 || say "(exit $?: a request is Held)"

heading "6. A Held request: more rows than anonymize.max_rows_per_request"
say "A switchboard number typed by mistake would erase half the archive, so a request" \
	"over the limit (100,000 rows by default) rewrites nothing and waits for a person." \
	"Here it is Acme's shared line, in 120,000 calls: check it, confirm it, run again."
pga list --status=Held
pga preview 5
pga confirm 5
pga run --interval=0.2

heading "7. The page after: Done, identifiers masked, rows counted"
pga list
say "" "The receipts of a request: every status change, rows per target; never an identifier."
pga show 2

heading "8. The archive after: the same rows"
say "Rewritten up to each request's date; later contacts, other people and recordings kept" \
	"(whoever wants recordings or chat logs deleted deletes them first, then files the request)."
sql <<'SQL'
SELECT 'calls' AS "table", caller AS identifier, started_at::text AS "when", recording AS kept
FROM archive.calls WHERE recording IN ('rec/p1.wav', 'rec/p2.wav', 'rec/p3.wav', 'rec/b1.wav',
      'rec/b2.wav', 'rec/s1.wav', 'rec/e1.wav', 'rec/e2.wav') UNION ALL
SELECT 'chats', chatter_id, started_at::text, log FROM archive.chats WHERE log IN ('log/b1', 'log/b2', 'log/b3') UNION ALL
SELECT 'emails', from_address, received_on::text, subject FROM archive.emails WHERE subject IN ('my order', 'again') UNION ALL
SELECT 'sms', number, answered_at::text, score::text FROM sms.answers WHERE answered_at IN ('2024-01-10 12:05+01', '2024-02-01 09:10+01') UNION ALL
SELECT 'events', number, at::text, event FROM raw.events WHERE at IN ('2024-02-01 09:00+01', '2024-02-01 09:00:05+01', '2024-01-10 12:00+01')
ORDER BY 1, 3;
SQL
say "" "A search by a forgotten number or address is answered \"nothing found\" by the portal:"
sql <<'SQL'
SELECT v AS "typed in the search", anonymize.is_anonymized(v) AS "is_anonymized()"
FROM (VALUES ('+47 987 65'), ('Bob <Bob.Test@MyTest.NO>'), ('004612345678'), ('98765432')) AS t(v);
SQL

heading "9. Monitoring: the worker, the runs"
pga status
sql -c "SELECT id, trigger, requests_done, requests_held, requests_failed, rows_rewritten, outcome FROM anonymize.runs ORDER BY id"

heading "10. A Done request is the record of the erasure: it cannot be cancelled"
pga cancel 2 || say "(exit $?)"

heading "11. A second run finds nothing to do"
pga run --no-progress

log "demo finished; the throwaway cluster is removed"
