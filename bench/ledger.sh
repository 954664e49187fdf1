#!/usr/bin/env bash
# bench/ledger.sh: what the ledger costs the nightly run.
#
#   bench/ledger.sh [--rows N] [--reps R] [--k K] [--done D]
#
# On the benchmark archive (bench/schema.sql, N calls, default 2,000,000:
# about 1.9 N rows in 5 targets), in a private throwaway cluster set up as
# bench/run.sh's, measures runs of K fresh requests (default 100: a night)
# from run() until the run's process has vacuumed and left, R times each
# (default 3), with anonymize.rebuild_indexes off (the index rebuilds cost
# the same with or without a ledger, and take minutes on a busy machine):
#
#   none:   an empty ledger;
#   ledger: D Done requests in the ledger (default 100,000, a phone and an
#           email digest each, every scope), every row older than the last
#           run's horizon (the nightly case: only rows written since are
#           checked against the ledger);
#   full:   the same ledger after ledger_import() (full_recheck: every row
#           of every target is checked against the ledger once);
#
# and writes the medians and the ratios ledger/none (target <= 1.2) and
# full/none (target <= 3) to bench/RESULTS-ledger.md (bench/RESULTS.md
# links to it), with the machine and its load.
set -euo pipefail
. "$(dirname "$0")/../tools/lib.sh"

rows=2000000
reps=3
k=100
done_reqs=100000
while [ $# -gt 0 ]; do
	case $1 in
		--rows) rows=$2; shift 2 ;;
		--reps) reps=$2; shift 2 ;;
		--k) k=$2; shift 2 ;;
		--done) done_reqs=$2; shift 2 ;;
		*) echo "usage: bench/ledger.sh [--rows N] [--reps R] [--k K] [--done D]" >&2; exit 2 ;;
	esac
done

. "$TOP/bench/lib.sh"
bench_cluster ledger "max_parallel_workers_per_gather = 0" "anonymize.rebuild_indexes = off"

bench_archive "$rows"

# one run of K fresh requests, until its process is gone; prints ms
run_ms() {
	local t0
	q -c "SELECT bench.file_requests($k)" >/dev/null
	q -c 'CHECKPOINT'
	t0=$(ms_now)
	q -c 'SELECT anonymize.run()' >/dev/null
	wait_run_gone
	echo $(($(ms_now) - t0))
}

# a first run: the key, the horizon
run_ms >/dev/null
: >"$work/none"; : >"$work/ledger"; : >"$work/full"
fill_ledger() {
	q -c "DELETE FROM anonymize.ledger"
	q -c "INSERT INTO anonymize.ledger (request_id, kind, digest, to_date, archive, sms_survey, raw_data, done_at, source)
		SELECT 1000000000 + g, kd, sha256(convert_to(kd || g, 'UTF8')), current_date, true, true, true, now(), 'import'
		FROM generate_series(1, $done_reqs) g, (VALUES ('phone'), ('email')) k(kd)"
}
for i in $(seq "$reps"); do
	q -c "DELETE FROM anonymize.ledger"
	ms=$(run_ms); echo "$ms" >>"$work/none"
	echo "rep $i: none $ms ms, load $(cut -d' ' -f1 /proc/loadavg)" >&2
	fill_ledger
	ms=$(run_ms); echo "$ms" >>"$work/ledger"
	echo "rep $i: ledger of $done_reqs $ms ms, load $(cut -d' ' -f1 /proc/loadavg)" >&2
	q -c "UPDATE anonymize.ledger_state SET full_recheck = true"
	ms=$(run_ms); echo "$ms" >>"$work/full"
	echo "rep $i: full re-check $ms ms, load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
none=$(median <"$work/none"); ledger=$(median <"$work/ledger"); full=$(median <"$work/full")
res=$TOP/bench/RESULTS-ledger.md
{
	echo "# anonymize benchmark: the ledger"
	echo
	echo "Produced by \`bench/ledger.sh --rows $rows --reps $reps --k $k --done $done_reqs\` on $(date -u '+%Y-%m-%d %H:%M UTC'), branch \`$(git -C "$TOP" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?')\` at \`$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')\`."
	echo
	echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) memory, $(as_pg postgres --version), shared_buffers 1GB, autovacuum off, anonymize.rebuild_indexes off; the cores are shared with other work (load average 1 min at the end: $(cut -d' ' -f1 /proc/loadavg))."
	echo
	echo "Archive: $archive_rows rows in 5 targets (bench/schema.sql), frozen. Each run: $k fresh requests (every scope), timed from run() until its process has vacuumed and left. Medians of $reps, with every value."
	echo
	echo "| measurement | value | |"
	echo "|---|---|---|"
	echo "| run, empty ledger | $none ms ($(sort -g "$work/none" | paste -sd' ')) | |"
	echo "| run, $done_reqs Done requests in the ledger (only rows written since the last run checked) | $ledger ms ($(sort -g "$work/ledger" | paste -sd' ')) | |"
	echo "| run, full re-check after an import (every row checked against the ledger) | $full ms ($(sort -g "$work/full" | paste -sd' ')) | |"
	echo "| ratio: ledger / empty | $(ratio "$ledger" "$none") | target <= 1.2 |"
	echo "| ratio: full re-check / empty | $(ratio "$full" "$none") | target <= 3 |"
	echo "| ratios of the fastest runs (least disturbed by other work): ledger / empty, full / empty | $(ratio "$(sort -g "$work/ledger" | head -1)" "$(sort -g "$work/none" | head -1)"), $(ratio "$(sort -g "$work/full" | head -1)" "$(sort -g "$work/none" | head -1)") | |"
} >"$res"
cat "$res"
