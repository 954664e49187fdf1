#!/usr/bin/env bash
# bench/probe.sh: a request that costs its own size (issue 13, item 5).
#
#   bench/probe.sh [--sizes N,N...] [--reps R] [--k K]
#
# For each size N (default 2,000,000 and 20,000,000 calls), in a private
# throwaway cluster: a table of N calls (3 a person, over 1,000 days) with
# the portal's index on the caller and an index over
# anonymize.canonical_phone(caller, '47', ''), registered as the only
# target; then R times (default 3) each of:
#
#   lookup: run() of K fresh requests (default 10) with the ledger empty,
#           so that the run looks the numbers up in the index;
#   scan:   the same with the ledger holding the requests Done before, as
#           in a nightly run of a server in service: the ledger's late rows
#           are found by their age, so the run scans;
#   preview: preview() of one request (it always looks up).
#
# Each run is timed from run() until its process has vacuumed and left,
# with the rows it rewrote, and split into its phases from what it reports doing (pg_stat_activity,
# sampled every 0.05 s): matching (looking up or scanning), rewriting, and
# cleanup (finishing, vacuuming, scrubbing, rebuilding).  Writes the
# medians and the ratios 20M / 2M to bench/RESULTS-probe.md.
set -euo pipefail
. "$(dirname "$0")/../tools/lib.sh"

sizes=2000000,20000000
reps=3
k=10
while [ $# -gt 0 ]; do
	case $1 in
		--sizes) sizes=$2; shift 2 ;;
		--reps) reps=$2; shift 2 ;;
		--k) k=$2; shift 2 ;;
		*) echo "usage: bench/probe.sh [--sizes N,N...] [--reps R] [--k K]" >&2; exit 2 ;;
	esac
done

. "$TOP/bench/lib.sh"
bench_cluster probe "anonymize.cost_delay = 0" "maintenance_work_mem = 256MB"
q -c 'CREATE EXTENSION anonymize'

# build N: the calls table of N rows, its two indexes, registered
build() {
	local n=$1
	q -c "SELECT count(anonymize.remove_target(tbl, col)) FROM anonymize.target" \
		-c "DROP SCHEMA IF EXISTS archive CASCADE" -c "DELETE FROM anonymize.ledger" >/dev/null
	q -c "CREATE SCHEMA archive" \
		-c "CREATE TABLE archive.calls (id bigint, started_at timestamptz, caller text, queue text)" \
		-c "INSERT INTO archive.calls SELECT g, '2022-01-01'::timestamptz + (g % 1000) * interval '1 day',
				CASE g % 2 WHEN 0 THEN '+47' ELSE '' END || (40000000 + g % ($n / 3)), 'q' || g % 10
			FROM generate_series(1, $n) g" \
		-c "CREATE INDEX calls_caller_idx ON archive.calls (caller)" \
		-c "CREATE INDEX calls_canonical_idx ON archive.calls (anonymize.canonical_phone(caller, '47', ''))" \
		-c "VACUUM (FREEZE, ANALYZE) archive.calls" \
		-c "SELECT anonymize.add_target('archive.calls', 'caller', 'phone', 'archive', 'started_at')" >/dev/null
	q -c 'CHECKPOINT'
}

# phases of the run in $work/samples: "matching rewriting cleanup" in ms
phase_ms() {
	awk -v total="$1" '$2 != "" {n++; w = $2; if (w == "looking" || w == "scanning") m++;
			else if (w == "rewriting") r++; else if (w != "marking" && w != "waiting") c++}
		END {f = (n ? total / n : 0); printf "%d %d %d\n", m * f, r * f, c * f}' "$work/samples"
}

# run_ms: one run of K fresh requests until its process has left;
# prints "ms matching rewriting cleanup rows-rewritten"
run_ms() {
	local ms next=$(($(q -c "SELECT coalesce(max(id), 0) FROM anonymize.anonymize_request") + 1))
	# persons never asked for before: one in 97 from the request's id on
	q -c "INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
		SELECT (40000000 + (($next + g) * 97) % (SELECT count(*) / 3 FROM archive.calls))::text,
			   current_date, 'bench' FROM generate_series(1, $k) g" >/dev/null
	q -c 'CHECKPOINT'
	ms=$(timed_run "$work/samples")
	echo "$ms $(phase_ms "$ms") $(q -c "SELECT coalesce(sum(rows_anonymized), 0) FROM anonymize.anonymize_request
		WHERE comment = 'bench' AND id >= $next")"
}

# preview_ms: preview() of one fresh request, in ms (its execution time)
preview_ms() {
	local id
	id=$(q -c "INSERT INTO anonymize.anonymize_request (phone, to_date, comment)
		VALUES ((40000000 + (SELECT count(*) / 3 - 7 FROM archive.calls))::text, current_date, 'bench preview')
		RETURNING id")
	q -c "EXPLAIN (ANALYZE, TIMING OFF) SELECT count(*) FROM anonymize.preview($id)" |
		awk '/Execution Time/ {printf "%.1f\n", $3}'
	q -c "DELETE FROM anonymize.anonymize_request WHERE id = $id" >/dev/null
}

col() { awk -v c="$1" '{print $c}' "$2"; }
IFS=, read -r -a size_list <<<"$sizes"
for n in "${size_list[@]}"; do
	log "building $n calls"
	t0=$(ms_now)
	build "$n"
	heap=$(q -c "SELECT pg_size_pretty(pg_table_size('archive.calls'))")
	log "built in $((($(ms_now) - t0) / 1000)) s ($heap of heap)"
	: >"$work/lookup.$n"; : >"$work/scan.$n"; : >"$work/preview.$n"
	for i in $(seq "$reps"); do
		q -c "DELETE FROM anonymize.ledger" >/dev/null
		run_ms >>"$work/lookup.$n"
		echo "$n rep $i: lookup $(tail -1 "$work/lookup.$n") (ms: total matching rewriting cleanup), load $(load1)" >&2
		# the ledger now holds the requests Done so far: the run scans
		run_ms >>"$work/scan.$n"
		echo "$n rep $i: scan $(tail -1 "$work/scan.$n"), load $(load1)" >&2
		preview_ms >>"$work/preview.$n"
	done
	echo "$heap" >"$work/heap.$n"
done

med() { col "$1" "$2" | median; }
res=$TOP/bench/RESULTS-probe.md
{
	echo "# anonymize benchmark: a request that costs its own size"
	echo
	echo "Produced by \`bench/probe.sh --sizes $sizes --reps $reps --k $k\` on $(date -u '+%Y-%m-%d %H:%M UTC'), branch \`$(git -C "$TOP" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?')\` at \`$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')\`."
	echo
	echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) memory, $(as_pg postgres --version), shared_buffers 1GB, autovacuum off, throttle off (anonymize.cost_delay = 0), rebuild_indexes on; load average (1 min) at the end: $(load1)."
	echo
	echo "One target, \`archive.calls\` (3 calls a person, an index on the caller and one over \`anonymize.canonical_phone(caller, '47', '')\`), frozen. Each run: $k fresh requests, from run() until its process has vacuumed and left; its phases from pg_stat_activity every 0.05 s. *lookup*: the ledger empty, so the run looks the numbers up in the index; *scan*: the ledger holding the requests Done before, so the run scans for late rows. Medians of $reps, ms."
	echo
	echo "| calls | heap | run | total | matching | rewriting | cleanup | rows rewritten | preview() of one request |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for n in "${size_list[@]}"; do
		for m in lookup scan; do
			echo "| $n | $(cat "$work/heap.$n") | $m | $(med 1 "$work/$m.$n") | $(med 2 "$work/$m.$n") | $(med 3 "$work/$m.$n") | $(med 4 "$work/$m.$n") | $(med 5 "$work/$m.$n") | $([ $m = lookup ] && median <"$work/preview.$n" || echo) |"
		done
	done
	if [ "${#size_list[@]}" -ge 2 ]; then
		a=${size_list[0]} b=${size_list[-1]}
		echo
		echo "| ratio $b / $a calls | total | matching | cleanup |"
		echo "|---|---|---|---|"
		for m in lookup scan; do
			echo "| $m | $(ratio "$(med 1 "$work/$m.$b")" "$(med 1 "$work/$m.$a")") | $(ratio "$(med 2 "$work/$m.$b")" "$(med 2 "$work/$m.$a")") | $(ratio "$(med 4 "$work/$m.$b")" "$(med 4 "$work/$m.$a")") |"
		done
	fi
	echo
	echo "Every run (calls, kind, total, matching, rewriting, cleanup, rows rewritten):"
	echo
	echo '```'
	for n in "${size_list[@]}"; do
		for m in lookup scan; do sed "s/^/$n $m /" "$work/$m.$n"; done
	done
	echo '```'
} >"$res"
cat "$res"
