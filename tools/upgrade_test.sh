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
# Then the same checks after pg_upgrade of the stopped 15 cluster, with
# 15's binaries and the Debian 12 libraries they need carried into the
# root (no newer Debian has a postgresql-15).  18 is the exception: see
# OLD_PG_DUMP.
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
	"SELECT extversion FROM pg_extension WHERE extname = 'anonymize'"
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
	if "$@" >"${work:-/tmp}/check.out" 2>&1; then
		echo "ok $checks - $what"
	else
		echo "not ok $checks - $what"
		sed 's/^/    /' "${work:-/tmp}/check.out"
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
		q "$1" "${SNAPSHOT_QUERIES[$i]}" >"$2/$i" || echo "(failed)" >>"$2/$i"
	done
}

# check_moved LABEL BEFORE: the database "archive" of the cluster at hand,
# moved from 15, is the one in the snapshot directory BEFORE, its search
# hook and its next runs work
check_moved() {
	local p=$1 before=$2 i
	snapshot archive "$work/after"
	for i in "${!SNAPSHOT_QUERIES[@]}"; do
		check "$p intact: ${SNAPSHOT_QUERIES[$i]}" \
			same "$(cat "$work/after/$i")" "$(cat "$before/$i")"
	done

	# the search hook answers from the moved digests and key
	check "$p is_anonymized knows the Done request's number, in any format" \
		same "$(q archive "SELECT string_agg(anonymize.is_anonymized(x)::text, ',') FROM unnest(ARRAY['98765432', '+47 987 65 432', '004798765432']) x")" true,true,true
	check "$p is_anonymized knows nothing of a number never requested" \
		same "$(q archive "SELECT anonymize.is_anonymized('93333333')")" f
	check "$p is_anonymized forgets the cancelled request" \
		same "$(q archive "SELECT anonymize.is_anonymized('55555555')")" f

	# the next run works on the moved key and receipts
	check "$p a run finishes the Waiting and the confirmed request" \
		same "$(q archive 'SELECT anonymize.run()')" 2
	check "$p the Done request untouched, the others Done with their rows" \
		same "$(q archive "SELECT string_agg(comment || ':' || status || ':' || rows_anonymized, ',' ORDER BY id) FROM anonymize.anonymize_request")" \
		first:Done:3,held:Done:6,second:Done:4
	check "$p the archive erased for them, a number never requested kept" \
		same "$(q archive "SELECT string_agg(id || ':' || caller, ',' ORDER BY id) FROM cc.calls")" \
		1:Anonymized,2:Anonymized,3:Anonymized,4:004612345678,5:Anonymized,6:Anonymized,7:Anonymized,8:Anonymized,9:Anonymized,10:Anonymized,11:Anonymized,12:93333333
	check "$p a new request continues the ids" \
		same "$(q archive "INSERT INTO anonymize.anonymize_request (phone, to_date, comment) VALUES ('93333333', '2024-06-01', 'new') RETURNING id")" 5
	check "$p the next run does the new request" \
		same "$(q archive 'SELECT anonymize.run()')" 1
	check "$p the new request is Done, its number erased and masked" \
		same "$(q archive "SELECT r.status || ':' || r.rows_anonymized || ':' || (r.phone <> '93333333') || ':' || c.caller FROM anonymize.anonymize_request r, cc.calls c WHERE r.comment = 'new' AND c.id = 12")" \
		Done:1:true:Anonymized
	check "$p is_anonymized knows the new request's number" \
		same "$(q archive "SELECT anonymize.is_anonymized('+47 93 33 33 33')")" t
	check "$p the run log has the moved run and the new ones" \
		same "$(q archive 'SELECT count(*) FROM anonymize.run_log')" 3
	check "$p no receipt holds an identifier" \
		same "$(q archive "SELECT count(*) FROM anonymize.request_log WHERE detail ~ '98765432|91234567|93333333|carol'")" 0
}

# new_side VERSION: build and install anonymize for VERSION in this root,
# in a private copy (global: the trap runs after the caller has returned)
new_side() {
	use_pg "$1"
	work=$(mktemp -d /tmp/anonymize-upgrade.XXXXXX)
	chmod 755 "$work"
	[ "$(id -u)" = 0 ] && chown postgres: "$work"
	trap 'stop_cluster "$work/cluster"' EXIT
	stage_tree "$work/src"
	private_pg "$work/pg"
	build_install "$work/src"
}

# finish_side VERSION RESULT: stop, clean up, and leave the counts for the
# caller outside the root in file RESULT
finish_side() {
	stop_cluster "$work/cluster"
	[ $failures -eq 0 ] && rm -rf "$work"
	echo "$failures $checks" >"$2"
	[ $failures -eq 0 ]
}

# restore_here VERSION PORT15 BEFORE: in this root, dump the 15 archive
# with VERSION's pg_dump, restore it into a new VERSION cluster, compare it
# with the snapshot in directory BEFORE, and run there.
restore_here() {
	local v=$1 port15=$2 before=$3 p="PostgreSQL 15 -> $1 (pg_dump):"
	new_side "$v"
	start_cluster "$work/cluster" "$(free_port)" "${CLUSTER_CONF[@]}"
	if [ "$port15" = dumped-by-15 ]; then
		# see OLD_PG_DUMP below
		check "$p the dump of 15's own pg_dump is there" \
			cp "$before/archive15.dump" "$work/archive.dump"
		chown postgres: "$work/archive.dump"
	else
		check "$p pg_dump $v dumps the 15 archive" \
			as_pg pg_dump -Fc -h 127.0.0.1 -p "$port15" -U postgres -f "$work/archive.dump" archive
	fi
	as_pg createdb archive
	check "$p pg_restore $v restores it" \
		as_pg pg_restore --exit-on-error -d archive "$work/archive.dump"
	check_moved "$p" "$before"
	finish_side "$v" "$before/../result-restore-$v"
}

# upgrade_here VERSION OLD BEFORE: in this root, pg_upgrade the stopped 15
# cluster in directory OLD (its binaries in OLD/pg, with the libraries of
# Debian 12 they need in OLD/lib) to a new VERSION cluster, and check it
# as restore_here does.
upgrade_here() {
	local v=$1 old=$2 before=$3 p="PostgreSQL 15 -> $1 (pg_upgrade):" port
	new_side "$v"
	port=$(free_port)
	init_cluster "$work/cluster" "$port" "${CLUSTER_CONF[@]}"
	as_pg mkdir -p "$work/upgrade"
	check "$p pg_upgrade $v upgrades the 15 cluster" \
		as_pg env LD_LIBRARY_PATH="$old/lib" bash -c 'cd "$1" && pg_upgrade --no-sync \
			-b "$2" -B "$3" -d "$4" -D "$5" -p "$6" -P "$7" -s "$1"' _ \
		"$work/upgrade" "$old/pg/usr/lib/postgresql/15/bin" "$PG_BIN" "$old/data" \
		"$work/cluster/data" "$(free_port)" "$port"
	as_pg pg_ctl -D "$work/cluster/data" -l "$work/cluster/server.log" -w -t 60 start >/dev/null
	export PGHOST=$work/cluster PGPORT=$port PGUSER=postgres
	check_moved "$p" "$before"
	finish_side "$v" "$before/../result-upgrade-$v"
}

case ${1:-} in
--restore-here)
	[ $# -eq 4 ] || { echo "usage: upgrade_test.sh --restore-here VERSION PORT15 BEFORE" >&2; exit 2; }
	restore_here "$2" "$3" "$4"
	exit
	;;
--upgrade-here)
	[ $# -eq 4 ] || { echo "usage: upgrade_test.sh --upgrade-here VERSION OLD BEFORE" >&2; exit 2; }
	upgrade_here "$2" "$3" "$4"
	exit
	;;
esac

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(17 18)

# The versions whose own pg_dump cannot read this 15 (so neither can their
# pg_upgrade): Debian 12's 15.20 (a security release of November 2026)
# gives every column an attribute option pg_attver, which the pg_dump of
# 15.20 and of trixie's 17.12 leave out of a dump; sid's 18.6 (August 2026)
# predates it, copies it into the dump, and its server refuses it
# ("unrecognized parameter").  18 gets the dump of 15's own pg_dump, and no
# pg_upgrade, until sid has an 18 of that release or later.
declare -A OLD_PG_DUMP=([18]=1)

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
as_pg pg_dump -Fc archive >"$work/before/archive15.dump"

# carry_libs ROOT DEST: copy into DEST the libraries of Debian 12 that the
# 15 binaries need and the root lacks (trixie and sid carry newer
# sonames: libicu 72, libldap 2.5, libunistring 2)
carry_libs() {
	local root=$1 dest=$2 have f so path
	have=$(in_root "$root" ldconfig -p | awk 'NR > 1 { print $1 }')
	mkdir -p "$dest"
	for f in "$work/pg/usr/lib/postgresql/15/bin"/* "$work/pg/usr/lib/postgresql/15/lib"/*.so; do
		ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'
	done | sort -u | while read -r so path; do
		grep -qxF "$so" <<<"$have" || cp -L "$path" "$dest/$so"
	done
}

# in_stage VERSION WHAT [ARGS...]: stage this tree and the snapshot in the
# root of VERSION and run upgrade_test.sh --WHAT-here VERSION ARGS...
# BEFORE there (for upgrade, ARGS is the staged 15 cluster), adding its
# counts to ours
in_stage() {
	local v=$1 what=$2 dir stage f c rc=0
	shift 2
	dir=$(root_dir "$v")
	ensure_root "$v"
	root_mount "$dir"
	root_packages "$v" "$dir"
	stage=$(mktemp -d "$dir/tmp/anonymize-upgrade-src.XXXXXX")
	chmod 755 "$stage"
	stage_tree "$stage/src"
	cp -r "$work/before" "$stage/before"
	if [ "$what" = upgrade ]; then
		stage_old "$dir" "$stage/old"
		set -- "${stage#"$dir"}/old"
	fi
	in_root "$dir" chown -R postgres: "${stage#"$dir"}"
	in_root "$dir" bash "${stage#"$dir"}/src/tools/upgrade_test.sh" "--$what-here" "$v" "$@" \
		"${stage#"$dir"}/before" || rc=1
	read -r f c <"$stage/result-$what-$v" || { f=1; c=1; }
	checks=$((checks + c))
	failures=$((failures + f))
	[ $rc -eq 0 ] && rm -rf "$stage"
	root_umount
	return $rc
}

# stage_old ROOT DEST: the stopped 15 cluster, its binaries and the
# libraries they need, for pg_upgrade in ROOT
stage_old() {
	local root=$1 dest=$2
	mkdir -p "$dest"
	cp -a "$work/cluster/data" "$dest/data"
	cp -a "$work/pg" "$dest/pg"
	carry_libs "$root" "$dest/lib"
}

status=0
# 1. dump and restore, with the newer pg_dump, while 15 runs
for v in "${versions[@]}"; do
	if [ -n "${OLD_PG_DUMP[$v]:-}" ]; then
		log "PostgreSQL $v: restore the dump of 15's pg_dump, run"
		in_stage "$v" restore dumped-by-15 || status=1
	else
		log "PostgreSQL $v: dump the 15 archive with pg_dump $v, restore it, run"
		in_stage "$v" restore "$port15" || status=1
	fi
done

# 2. pg_upgrade of the stopped 15 cluster, with 15's binaries carried into the root
stop_cluster "$work/cluster"
for v in "${versions[@]}"; do
	[ -z "${OLD_PG_DUMP[$v]:-}" ] || continue
	log "PostgreSQL $v: pg_upgrade the 15 cluster, run"
	in_stage "$v" upgrade || status=1
done

echo "upgrade test: $((checks - failures)) of $checks checks passed"
if [ $failures -eq 0 ] && [ $status -eq 0 ]; then
	rm -rf "$work"
else
	log "FAILED (work files in $work)"
	exit 1
fi
