#!/usr/bin/env bash
# bench/is_anonymized.sh: what the search hooks cost.
#
#  1. nanoseconds per anonymize.is_anonymized() call with 10, 10,000 and
#     100,000 requests on the page (half Done, half Waiting), 1,000,000
#     calls in four formats, net of generating the values;
#  2. the protect() guard on a 2,000,000-row table with 1,000 Waiting
#     requests, as a ratio to the same rows unprotected, read by a role
#     subject to row-level security: a search by queue (sequential scan),
#     a full read of every row (worst case) and searches by number through
#     the index; then a full read again with no request pending (the
#     steady state between nightly runs).
#
# Each figure is measured REPEAT times (default 3) and reported as the
# median with the min-max spread; for the guard, the ratio of each pair
# measured together and the ratio of the fastest of each (the least
# disturbed by other load on a shared machine).  Uses a private build and cluster
# (tools/lib.sh); parallel query is off so that the shared machine's load
# moves the numbers less, and so is parallel maintenance: the run's VACUUM
# with parallel index workers can hang behind the next DROP EXTENSION's
# queued lock (the deadlock detector cannot see the leader waiting for its
# workers).  Usage: bench/is_anonymized.sh [REPEAT]
set -euo pipefail
. "$(dirname "$0")/../tools/lib.sh"

REPEAT=${1:-3}
ROWS=${BENCH_ROWS:-2000000}
CALLS=${BENCH_CALLS:-1000000}

ensure_deps
work=$(mktemp -d /tmp/anonymize-bench.XXXXXX)
chmod 755 "$work"
trap 'stop_cluster "$work/cluster"; rm -rf "$work"' EXIT
stage_tree "$work/src"
private_pg "$work/pg"
build_install "$work/src"
# other checkouts start clusters too: on a port taken meanwhile, try another
for attempt in 1 2 3 4 5; do
	port=$((55000 + RANDOM % 900))
	(echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && continue
	log "starting a private cluster on port $port"
	rm -rf "$work/cluster"
	start_cluster "$work/cluster" "$port" \
		"anonymize.country_code = '47'" "timezone = 'Europe/Oslo'" \
		"anonymize.enabled = off" "shared_buffers = '1GB'" \
		"max_parallel_workers_per_gather = 0" "autovacuum = off" \
		"max_parallel_maintenance_workers = 0" && break
done

q() { as_pg psql -X -q -A -t -v ON_ERROR_STOP=1 -d bench "$@"; }
as_pg createdb bench
q -c "CREATE ROLE bench_reader" -c "CREATE EXTENSION anonymize" -f "$TOP/bench/is_anonymized.sql" >/dev/null

# median and spread of a list of numbers
stats() { sort -g | awk '{v[NR]=$1} END {printf "%s %s %s\n", v[int((NR+1)/2)], v[1], v[NR]}'; }

printf '\n%-52s %12s %22s\n' "measure" "median" "min - max"
for n in 10 10000 100000; do
	# half filed and finished by a run (Done: digests only), half Waiting
	q -c "DROP EXTENSION anonymize CASCADE" -c "CREATE EXTENSION anonymize" \
		-c "SELECT bench_page(1, $n / 2)" -c "SELECT anonymize.run()" \
		-c "SELECT bench_page($n / 2 + 1, $n)" >/dev/null
	count=$(q -c "SELECT count(*) FILTER (WHERE status = 'Done') || ' Done, ' || count(*) FILTER (WHERE status = 'Waiting') || ' Waiting' FROM anonymize.anonymize_request")
	log "page: $count"
	vals=()
	for r in $(seq "$REPEAT"); do
		# one session: build the cache, then time the values alone and with the hook
		ns=$(q -c "SELECT anonymize.is_anonymized('1')" \
			-c "SELECT ((bench_calls($CALLS, true) - bench_calls($CALLS, false)) * 1e9 / $CALLS)::numeric(10,1)" | tail -1)
		vals+=("$ns")
	done
	read -r med lo hi < <(printf '%s\n' "${vals[@]}" | stats)
	printf '%-52s %9s ns %12s - %s ns\n' "is_anonymized, $n requests" "$med" "$lo" "$hi"
done

log "building the $ROWS-row archive"
q -c "DROP EXTENSION anonymize CASCADE" -c "CREATE EXTENSION anonymize" >/dev/null
q -c "INSERT INTO anonymize.anonymize_request (phone, to_date) SELECT (40000000 + k * 487)::text, current_date - 200 FROM generate_series(1, 1000) k" \
	-c "SELECT bench_archive($ROWS)" -c "VACUUM ANALYZE archive_plain" \
	-c "VACUUM ANALYZE archive_guarded" >/dev/null
hidden=$(q -c "SET ROLE bench_reader" -c "SELECT (SELECT count(*) FROM archive_plain) - (SELECT count(*) FROM archive_guarded)" | tail -1)

ratio() {	# ratio of two medians
	awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'
}
for what in full all lookup idle; do
	if [ $what = idle ]; then
		# the steady state between runs: nothing pending, the guard does
		# not read the value
		q -c "DELETE FROM anonymize.anonymize_request WHERE status = 'Waiting'" >/dev/null
		fn=all
	else
		fn=$what
	fi
	plain=()
	guarded=()
	for r in $(seq "$REPEAT"); do
		case $what in
			lookup) arg=", 2000" ;;
			*) arg="" ;;
		esac
		# warm both, then time them in turn in one session
		out=$(q -c "SET ROLE bench_reader" \
			-c "SELECT bench_$fn('archive_plain'$arg), bench_$fn('archive_guarded'$arg)" \
			-c "SELECT bench_$fn('archive_plain'$arg) * 1000, bench_$fn('archive_guarded'$arg) * 1000" | tail -1)
		plain+=("${out%|*}")
		guarded+=("${out#*|}")
		ratios+=("$(ratio "${out#*|}" "${out%|*}")")
	done
	read -r pm plo phi < <(printf '%s\n' "${plain[@]}" | stats)
	read -r gm glo ghi < <(printf '%s\n' "${guarded[@]}" | stats)
	case $what in
		full) label="search by queue, seq scan of $ROWS rows" ;;
		all) label="read every row ($ROWS, worst case)" ;;
		lookup) label="search by number via the index, each" ;;
		idle) label="read every row, no request pending" ;;
	esac
	printf '%-52s %9.3f ms %12.3f - %.3f ms\n' "$label: plain" "$pm" "$plo" "$phi"
	printf '%-52s %9.3f ms %12.3f - %.3f ms\n' "$label: guarded" "$gm" "$glo" "$ghi"
	read -r rm rlo rhi < <(printf '%s\n' "${ratios[@]}" | stats)
	printf '%-52s %12s %15s - %s\n' "  ratio guarded / plain" "$rm" "$rlo" "$rhi"
	printf '%-52s %12s\n' "  ratio of the fastest of each" "$(ratio "$glo" "$plo")"
	ratios=()
done
echo "(rows hidden by the guard for 1,000 Waiting requests: $hidden of $ROWS;"
echo " searches by number use EXECUTE, so each is planned, as without a prepared statement)"
