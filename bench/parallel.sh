#!/usr/bin/env bash
# bench/parallel.sh: the parallel run against the serial one, and the scan
# phase against PostgreSQL's own parallel sequential scan.
#
#   bench/parallel.sh [--rows N] [--reps R] [--k K] [--workers W] [--conf 'x = y']...
#
# On the benchmark archive (bench/schema.sql, N calls, default 2,000,000,
# plus chats, emails, SMS answers and the partitioned raw events: about
# 1.9 N rows in 5 targets), in a private throwaway cluster set up as
# bench/ledger.sh's (throttle off: anonymize.cost_delay = 0, so that both
# runs go at full speed), measures R times each (default 3), in turn:
#
#   serial:   run() of K fresh requests (default 100) with
#             anonymize.max_parallel_workers = 1, from run() until its
#             process has vacuumed and left, and its scan and rewrite
#             phases (the times pg_stat_activity shows it scanning and
#             rewriting, sampled every 0.05 s);
#   parallel: the same with anonymize.max_parallel_workers = W (default 2);
#   pg:       PostgreSQL's parallel sequential scan of the same tables with
#             the same number of processes (max_parallel_workers_per_gather
#             = W - 1), a predicate over each target's column per row; and
#             the same scan with no worker;
#   ceiling:  the same CPU work (no I/O) by one process, then split over W
#             processes at once: the best ratio this machine allows;
#
# --conf adds a line to the cluster's postgresql.conf (to try a setting,
# e.g. anonymize.parallel_min_table_size).  Writes the medians and the ratios parallel/serial (target <= 0.65)
# and parallel scan phase / PostgreSQL's parallel scan (target <= 1.3) to
# bench/RESULTS-parallel.md (bench/RESULTS.md links to it), with the load.
set -euo pipefail
. "$(dirname "$0")/../tools/lib.sh"

rows=2000000
reps=3
k=100
workers=2
extra_conf=()
while [ $# -gt 0 ]; do
	case $1 in
		--rows) rows=$2; shift 2 ;;
		--reps) reps=$2; shift 2 ;;
		--k) k=$2; shift 2 ;;
		--workers) workers=$2; shift 2 ;;
		--conf) extra_conf+=("$2"); shift 2 ;;
		*) echo "usage: bench/parallel.sh [--rows N] [--reps R] [--k K] [--workers W] [--conf 'setting = value']..." >&2; exit 2 ;;
	esac
done

. "$TOP/bench/lib.sh"
bench_cluster parallel "anonymize.rebuild_indexes = off" "anonymize.cost_delay = 0" \
	"max_worker_processes = 16" "max_parallel_workers = 8" ${extra_conf[@]+"${extra_conf[@]}"}

bench_archive "$rows"

# the scans PostgreSQL would make: a predicate over each target's column
scan_sql=""
while read -r tbl col; do
	scan_sql+="SELECT count(*) FROM $tbl WHERE $col LIKE '%x%';"
done <<<"$(q -F' ' -c 'SELECT tbl, col FROM anonymize.target ORDER BY tbl::text')"
# pg_scan W: ms of those scans with W processes in all
pg_scan() {
	local t0 set="SET max_parallel_workers_per_gather = $(($1 - 1)); SET parallel_setup_cost = 0;
		SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;"
	t0=$(ms_now)
	q -c "$set $scan_sql" >/dev/null
	echo $(($(ms_now) - t0))
}

# phase_ms STEP: ms from the first to the last sample of the run showing STEP
phase_ms() {
	awk -v step="$1" '$2 == step {if (!f) f = $1; l = $1} END {print (f ? l - f + 50 : 0)}' "$work/samples"
}

# run_ms W TAG: one run of K fresh requests with W processes, until its
# process is gone; appends "ms scan_ms rewrite_ms" to $work/TAG
run_ms() {
	local ms
	q -c "ALTER SYSTEM SET anonymize.max_parallel_workers = $1" -c 'SELECT pg_reload_conf()' >/dev/null
	q -c "SELECT bench.file_requests($k)" >/dev/null
	q -c 'CHECKPOINT'
	ms=$(timed_run "$work/samples")
	echo "$ms $(phase_ms scanning) $(phase_ms rewriting)" >>"$work/$2"
}

# the machine's own ceiling: the same CPU work (perl adding numbers, no
# I/O) done by one process, then split over W at once; ms
busy_ms() {
	local t0 i pids=()
	t0=$(ms_now)
	for i in $(seq "$1"); do
		perl -e "my \$x = 0; \$x += \$_ for 1 .. int(6e7 / $1)" &
		pids+=($!)
	done
	wait "${pids[@]}"
	echo $(($(ms_now) - t0))
}
: >"$work/busy1"; : >"$work/busyw"

q -c "$scan_sql" >/dev/null	# warm the cache
run_ms 1 warm; : >"$work/serial"; : >"$work/parallel"; : >"$work/pg1"; : >"$work/pgw"
grep -q 'Parallel Seq Scan' <(q -c "SET max_parallel_workers_per_gather = $((workers - 1)); SET parallel_setup_cost = 0; SET min_parallel_table_scan_size = 0;
	EXPLAIN (COSTS OFF) SELECT count(*) FROM archive.calls WHERE caller LIKE '%x%'") \
	|| { echo "PostgreSQL does not scan in parallel here" >&2; exit 1; }
for i in $(seq "$reps"); do
	run_ms 1 serial
	echo "rep $i: serial run $(tail -1 "$work/serial") (ms, scan ms, rewrite ms), load $(load1)" >&2
	run_ms "$workers" parallel
	echo "rep $i: parallel run $(tail -1 "$work/parallel") (ms, scan ms, rewrite ms), load $(load1)" >&2
	pg_scan 1 >>"$work/pg1"
	pg_scan "$workers" >>"$work/pgw"
	echo "rep $i: PostgreSQL's scan $(tail -1 "$work/pg1") ms alone, $(tail -1 "$work/pgw") ms with $workers processes, load $(load1)" >&2
	busy_ms 1 >>"$work/busy1"
	busy_ms "$workers" >>"$work/busyw"
	echo "rep $i: the same CPU work in 1 process $(tail -1 "$work/busy1") ms, in $workers $(tail -1 "$work/busyw") ms" >&2
done
col() { awk -v c="$1" '{print $c}' "$work/$2"; }
serial=$(col 1 serial | median); parallel=$(col 1 parallel | median)
sscan=$(col 2 serial | median); pscan=$(col 2 parallel | median)
srew=$(col 3 serial | median); prew=$(col 3 parallel | median)
pg1=$(median <"$work/pg1"); pgw=$(median <"$work/pgw")
busy1=$(median <"$work/busy1"); busyw=$(median <"$work/busyw")
res=$TOP/bench/RESULTS-parallel.md
{
	echo "# anonymize benchmark: the parallel run"
	echo
	echo "Produced by \`bench/parallel.sh --rows $rows --reps $reps --k $k --workers $workers$([ ${#extra_conf[@]} -eq 0 ] || printf " --conf '%s'" "${extra_conf[@]}")\` on $(date -u '+%Y-%m-%d %H:%M UTC'), branch \`$(git -C "$TOP" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?')\` at \`$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')\`."
	echo
	echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) memory, $(as_pg postgres --version), shared_buffers 1GB, autovacuum off, anonymize.rebuild_indexes off, throttle off (anonymize.cost_delay = 0); the cores are shared with other work (load average 1 min at the end: $(load1))."
	echo
	echo "Archive: $archive_rows rows in 5 targets (bench/schema.sql; raw.events partitioned), frozen, in the cache. Each run: $k fresh requests, timed from run() until its process has vacuumed and left; its scan and rewrite phases are the times pg_stat_activity shows it scanning and rewriting (sampled every 0.05 s). PostgreSQL's scan: \`SELECT count(*) FROM <target> WHERE <column> LIKE '%x%'\` over the 5 targets, forced parallel. Medians of $reps, with every value."
	echo
	echo "| measurement | value | |"
	echo "|---|---|---|"
	echo "| run, anonymize.max_parallel_workers = 1 | $serial ms ($(col 1 serial | sort -g | paste -sd' ')) | |"
	echo "| run, anonymize.max_parallel_workers = $workers | $parallel ms ($(col 1 parallel | sort -g | paste -sd' ')) | |"
	echo "| its scan phase, 1 process | $sscan ms ($(col 2 serial | sort -g | paste -sd' ')) | |"
	echo "| its scan phase, $workers processes | $pscan ms ($(col 2 parallel | sort -g | paste -sd' ')) | |"
	echo "| its rewrite phase, 1 process | $srew ms ($(col 3 serial | sort -g | paste -sd' ')) | |"
	echo "| its rewrite phase, $workers processes | $prew ms ($(col 3 parallel | sort -g | paste -sd' ')) | |"
	echo "| PostgreSQL's sequential scan, 1 process | $pg1 ms ($(sort -g "$work/pg1" | paste -sd' ')) | |"
	echo "| PostgreSQL's parallel sequential scan, $workers processes | $pgw ms ($(sort -g "$work/pgw" | paste -sd' ')) | |"
	echo "| ratio: run, $workers processes / 1 | $(ratio "$parallel" "$serial") | target <= 0.65 |"
	echo "| ratio: scan phase, $workers processes / 1 | $(ratio "$pscan" "$sscan") | |"
	echo "| ratio: rewrite phase, $workers processes / 1 | $(ratio "$prew" "$srew") | |"
	echo "| ratio: the run's scan phase / PostgreSQL's parallel scan, $workers processes each | $(ratio "$pscan" "$pgw") | target <= 1.3 |"
	echo "| ratio: PostgreSQL's scan, $workers processes / 1 | $(ratio "$pgw" "$pg1") | |"
	echo "| the machine's ceiling: the same CPU work split over $workers processes / done by 1 ($busyw / $busy1 ms) | $(ratio "$busyw" "$busy1") | the best any parallel run can reach here; 1 / $workers on idle cores |"
} >"$res"
cat "$res"
