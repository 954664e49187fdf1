#!/usr/bin/env bash
# tools/upgrade_test.sh: an archive moves from PostgreSQL 15 to 17 and to 18
# by dump and restore (doc/upgrading.md), and keeps everything anonymize
# knows.
#
# On the machine: a throwaway 15 cluster (tools/lib.sh) with an archive,
# two targets, a Done request, a cancelled one, a Held one confirmed, a
# Waiting one, a run log, receipts, digests and their key.  Then, in the
# Debian root of each newer version (tools/lib.sh), as PostgreSQL advises,
# that version's pg_dump reads the 15 database over TCP on 127.0.0.1,
# pg_restore loads it into a new cluster with the extension built there,
# and the check compares every table of the extension and of the archive
# with the 15 original, asks is_anonymized about the Done request, and runs:
# the Waiting and the confirmed requests are done, and a new request too.
#
# Prints one "ok" or "not ok" line a check and exits non-zero if any
# failed.  Called by tools/test.sh after the per-version suites, once the
# roots exist; `tools/upgrade_test.sh 17` moves to 17 only.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# everything the extension keeps, and the archive tables, as text
SNAPSHOT_QUERIES=(
	'SELECT id, phone, email, to_date, comment, archive, sms_survey, raw_data, status, user_name, created_at, done_at, rows_anonymized, error FROM anonymize.anonymize_request ORDER BY id'
	'SELECT * FROM anonymize.request_log ORDER BY id'
	'SELECT * FROM anonymize.request_private ORDER BY request_id'
	'SELECT id, md5(key), created_at FROM anonymize.secret ORDER BY id'
	'SELECT * FROM anonymize.targets ORDER BY 1, 2'
	'SELECT * FROM anonymize.run_log ORDER BY id'
	"SELECT last_value FROM anonymize.anonymize_request_id_seq"
	'SELECT * FROM cc.calls ORDER BY id'
	'SELECT * FROM cc.sms ORDER BY id'
)

# the settings of both clusters (the limit holds the shared line)
CLUSTER_CONF=(
	"anonymize.country_code = '47'"
	"anonymize.enabled = off"
	"anonymize.max_rows_per_request = 5"
	"timezone = 'Europe/Oslo'"
)

# the archive and the requests of the 15 cluster
SETUP_SQL="
CREATE EXTENSION anonymize;
CREATE SCHEMA cc;
CREATE TABLE cc.calls (id int PRIMARY KEY, caller text, started_at timestamptz NOT NULL);
CREATE TABLE cc.sms (id int PRIMARY KEY, number text, at timestamptz NOT NULL);
SELECT anonymize.add_target('cc.calls', 'caller', 'phone', 'archive', 'started_at');
SELECT anonymize.add_target('cc.sms', 'number', 'phone_or_email', 'sms_survey', 'at');
INSERT INTO cc.calls VALUES
	(1, '98765432', '2024-01-10 12:00+01'),
	(2, '+47 987 65 432', '2024-01-11 12:00+01'),
	(3, '91234567', '2024-01-12 12:00+01'),
	(4, '004612345678', '2024-01-13 12:00+01'),
	(5, '0047 912 34 567', '2024-01-14 12:00+01'),
	(6, '41111111', '2024-01-15 12:00+01'),
	(7, '+4741111111', '2024-01-15 12:00+01'),
	(8, '41 11 11 11', '2024-01-15 12:00+01'),
	(9, '004741111111', '2024-01-15 12:00+01'),
	(10, '41111111', '2024-01-16 12:00+01'),
	(11, '41111111', '2024-01-17 12:00+01'),
	(12, '93333333', '2024-01-18 12:00+01');
INSERT INTO cc.sms VALUES
	(1, '98765432', '2024-01-10 12:00+01'),
	(2, 'Carol@Example.com', '2024-01-11 12:00+01'),
	(3, '91234567', '2024-01-12 12:00+01');
INSERT INTO anonymize.anonymize_request (phone, to_date, comment, archive, sms_survey)
VALUES ('98765432', '2024-06-01', 'first', true, true);
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('55555555', '2024-06-01', 'cancelled');
DELETE FROM anonymize.anonymize_request WHERE comment = 'cancelled';
INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
VALUES ('41111111', '2024-06-01', 'held');
SELECT anonymize.run();
SELECT anonymize.confirm(id) FROM anonymize.anonymize_request WHERE comment = 'held';
INSERT INTO anonymize.anonymize_request (phone, email, to_date, comment, archive, sms_survey)
VALUES ('912 34 567', 'carol@example.com', '2024-06-01', 'second', true, true);
"

checks=0
failures=0

# check DESCRIPTION COMMAND...: one "ok" / "not ok" line
check() {
	local what=$1
	shift
	checks=$((checks + 1))
	if "$@"; then
		echo "ok $checks - $what"
	else
		echo "not ok $checks - $what"
		failures=$((failures + 1))
	fi
}

# same GOT WANT: compare, and show both when they differ
same() {
	[ "$1" = "$2" ] && return 0
	printf '    got:  %s\n    want: %s\n' "${1//$'\n'/$'\n'          }" "${2//$'\n'/$'\n'          }"
	return 1
}

# q DB SQL: one query's rows, unaligned
q() { as_pg psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

# snapshot DB DIR: the snapshot queries' results, a file each
snapshot() {
	local i
	mkdir -p "$2"
	for i in "${!SNAPSHOT_QUERIES[@]}"; do
		q "$1" "${SNAPSHOT_QUERIES[$i]}" >"$2/$i"
	done
}

# restore_here VERSION PORT15 BEFORE: in this root, dump the 15 archive
# with VERSION's pg_dump, restore it into a new VERSION cluster, compare it
# with the snapshot in directory BEFORE, and run there.
restore_here() {
	local v=$1 port15=$2 before=$3 port i
	use_pg "$v"
	# global: the trap runs after this function has returned
	work=$(mktemp -d /tmp/anonymize-upgrade.XXXXXX)
	chmod 755 "$work"
	trap 'stop_cluster "$work/cluster"' EXIT
	stage_tree "$work/src"
	private_pg "$work/pg"
	build_install "$work/src"
	port=$(free_port)
	start_cluster "$work/cluster" "$port" "${CLUSTER_CONF[@]}"
	local p="PostgreSQL 15 -> $v:"

	check "$p pg_dump $v dumps the 15 archive" \
		as_pg pg_dump -Fc -h 127.0.0.1 -p "$port15" -U postgres -f "$work/archive.dump" archive
	as_pg createdb archive
	check "$p pg_restore $v restores it" \
		as_pg pg_restore --exit-on-error -d archive "$work/archive.dump"
	snapshot archive "$work/after"
	for i in "${!SNAPSHOT_QUERIES[@]}"; do
		check "$p restored intact: ${SNAPSHOT_QUERIES[$i]}" \
			same "$(cat "$work/after/$i")" "$(cat "$before/$i")"
	done
	check "$p the extension is 1.0 there too" \
		same "$(q archive "SELECT extversion FROM pg_extension WHERE extname = 'anonymize'")" 1.0

	# the search hook answers from the restored digests and key
	check "$p is_anonymized knows the Done request's number, in any format" \
		same "$(q archive "SELECT string_agg(anonymize.is_anonymized(x)::text, ',') FROM unnest(ARRAY['98765432', '+47 987 65 432', '004798765432']) x")" true,true,true
	check "$p is_anonymized knows nothing of a number never requested" \
		same "$(q archive "SELECT anonymize.is_anonymized('93333333')")" f
	check "$p is_anonymized forgets the cancelled request" \
		same "$(q archive "SELECT anonymize.is_anonymized('55555555')")" f

	# the next run works on the restored key and receipts
	check "$p a run finishes the Waiting and the confirmed request" \
		same "$(q archive 'SELECT anonymize.run()')" 2
	check "$p the Done request untouched, the others Done with their rows" \
		same "$(q archive "SELECT string_agg(comment || ':' || status || ':' || rows_anonymized, ',' ORDER BY id) FROM anonymize.anonymize_request")" \
		first:Done:3,held:Done:6,second:Done:4
	check "$p the archive erased for them, a number never requested kept" \
		same "$(q archive "SELECT string_agg(id || ':' || caller, ',' ORDER BY id) FROM cc.calls")" \
		1:Anonymized,2:Anonymized,3:Anonymized,4:004612345678,5:Anonymized,6:Anonymized,7:Anonymized,8:Anonymized,9:Anonymized,10:Anonymized,11:Anonymized,12:93333333
	check "$p a new request continues the restored ids" \
		same "$(q archive "INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('93333333', '2024-06-01', 'new') RETURNING id")" 5
	check "$p the next run does the new request" \
		same "$(q archive 'SELECT anonymize.run()')" 1
	check "$p the new request is Done, its number erased and masked" \
		same "$(q archive "SELECT r.status || ':' || r.rows_anonymized || ':' || (r.phone <> '93333333') || ':' || c.caller FROM anonymize.anonymize_request r, cc.calls c WHERE r.comment = 'new' AND c.id = 12")" \
		Done:1:true:Anonymized
	check "$p is_anonymized knows the new request's number" \
		same "$(q archive "SELECT anonymize.is_anonymized('+47 93 33 33 33')")" t
	check "$p the run log has the restored run and the new ones" \
		same "$(q archive 'SELECT count(*) FROM anonymize.run_log')" 3
	check "$p no receipt holds an identifier" \
		same "$(q archive "SELECT count(*) FROM anonymize.request_log WHERE detail ~ '98765432|91234567|93333333|carol'")" 0

	stop_cluster "$work/cluster"
	[ $failures -eq 0 ] && rm -rf "$work"
	echo "$failures $checks" >"$before/../result-$v"
	[ $failures -eq 0 ]
}

if [ "${1:-}" = --restore-here ]; then
	[ $# -eq 4 ] || { echo "usage: upgrade_test.sh --restore-here VERSION PORT15 BEFORE" >&2; exit 2; }
	restore_here "$2" "$3" "$4"
	exit
fi

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(17 18)

# the 15 side, on the machine
work=$(mktemp -d /tmp/anonymize-upgrade.XXXXXX)
chmod 755 "$work"
trap 'stop_cluster "$work/cluster"; root_umount' EXIT
stage_tree "$work/src"
private_pg "$work/pg"
build_install "$work/src"
port15=$(free_port)
log "a PostgreSQL 15 archive on port $port15"
start_cluster "$work/cluster" "$port15" "${CLUSTER_CONF[@]}"
as_pg createdb archive
as_pg psql -X -q -v ON_ERROR_STOP=1 -d archive <<<"$SETUP_SQL" >/dev/null
p="PostgreSQL 15:"
check "$p the state to move is the one meant" \
	same "$(q archive "SELECT string_agg(comment || ':' || status, ',' ORDER BY id) FROM anonymize.anonymize_request")" \
	first:Done,held:Held,second:Waiting
check "$p the cancellation, the confirmation and the rewrites have receipts" \
	same "$(q archive "SELECT string_agg(DISTINCT event::text, ',' ORDER BY event::text) FROM anonymize.request_log WHERE event::text IN ('cancelled', 'confirmed', 'rewrite')")" \
	cancelled,confirmed,rewrite
check "$p is_anonymized knows the Done request's number" \
	same "$(q archive "SELECT anonymize.is_anonymized('+4798765432')")" t
snapshot archive "$work/before"

status=0
for v in "${versions[@]}"; do
	dir=$(root_dir "$v")
	ensure_root "$v"
	root_mount "$dir"
	root_packages "$v" "$dir"
	stage=$(mktemp -d "$dir/tmp/anonymize-upgrade-src.XXXXXX")
	chmod 755 "$stage"
	stage_tree "$stage/src"
	cp -r "$work/before" "$stage/before"
	in_root "$dir" chown -R postgres: "${stage#"$dir"}"
	log "PostgreSQL $v: dump the 15 archive, restore it, run"
	in_root "$dir" bash "${stage#"$dir"}/src/tools/upgrade_test.sh" --restore-here "$v" "$port15" \
		"${stage#"$dir"}/before" || status=1
	read -r f c <"$stage/result-$v" || { f=1; c=0; }
	checks=$((checks + c))
	failures=$((failures + f))
	[ $status -eq 0 ] && rm -rf "$stage"
	root_umount
done

echo "upgrade test: $((checks - failures)) of $checks checks passed"
stop_cluster "$work/cluster"
if [ $failures -eq 0 ] && [ $status -eq 0 ]; then
	rm -rf "$work"
else
	log "FAILED (work files in $work)"
	exit 1
fi
