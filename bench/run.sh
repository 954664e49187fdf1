#!/usr/bin/env bash
# bench/run.sh: the anonymize benchmark, in one command.
#
#   bench/run.sh [--rows N] [--reps R] [--tiny] [--no-profile]
#
#   --conf 'x = y' adds a line to the cluster's postgresql.conf (to try a
#   setting); --profile-k K profiles a run of K requests (default 1,000).
#   --portal-only measures only 6 (the portal's latency) on the archive;
#   --throttle DELAY/LIMIT (e.g. '10ms/200', repeatable) measures 6's
#   throttled runs at that anonymize.cost_delay / cost_limit instead of as
#   configured, one row each; --portal-secs S measures each phase of 6 for
#   S seconds (default 40: too short for more than one run at a slow throttle).
#
# Starts a private throwaway cluster (tools/lib.sh), builds a synthetic
# archive (bench/schema.sql: N calls, default 2,000,000, plus chats,
# emails, SMS answers and raw events, about 1.9 N rows in all), registers
# the targets and measures, side by side:
#
#   1. the floor: one sequential scan of every target;
#   2. anonymize.run() for K = 1, 100, 1,000, 10,000 fresh requests;
#   3. the peer: the per-request UPDATE a DBA would write (bench/naive.sql),
#      sampled and extrapolated to K;
#   4. the run's peak memory at K = 100,000;
#   5. the WAL a run writes, against the rows it rewrote, and the part of
#      the run's time and WAL that its page scrub takes (its log line);
#   6. the portal's latency (bench/portal.pgbench at a steady rate), p50
#      and p99, without a run, during runs at full speed and during runs
#      with the throttle as configured (anonymize.cost_delay, cost_limit),
#      and how much longer the throttled runs take;
#   7. is_anonymized() and the protect() guard, when they exist;
#
# and writes the table of ratios to bench/RESULTS.md with the machine's
# description.  --tiny runs everything at a tiny size (CI: it asserts that
# the benchmark works, never a speed) and writes its results to the work
# directory only.  Each measurement is repeated R times (default 3): the
# table shows the median and the spread (min-max), with the load average.
set -euo pipefail
. "$(dirname "$0")/../tools/lib.sh"

rows=2000000
reps=3
tiny=0
profile=1
profile_k=""
portal_only=0
portal_secs_opt=""
throttles=()
extra_conf=()
while [ $# -gt 0 ]; do
	case $1 in
		--rows) rows=$2; shift 2 ;;
		--reps) reps=$2; shift 2 ;;
		--tiny) tiny=1; shift ;;
		--no-profile) profile=0; shift ;;
		--profile-k) profile_k=$2; shift 2 ;;
		--conf) extra_conf+=("$2"); shift 2 ;;
		--portal-only) portal_only=1; shift ;;
		--throttle) throttles+=("$2"); shift 2 ;;
		--portal-secs) portal_secs_opt=$2; shift 2 ;;
		*) echo "usage: bench/run.sh [--rows N] [--reps R] [--tiny] [--no-profile] [--profile-k K] [--conf 'setting = value']... [--portal-only] [--throttle DELAY/LIMIT]... [--portal-secs S]" >&2; exit 2 ;;
	esac
done
for t in "${throttles[@]}"; do
	[[ $t =~ ^[0-9.]+(us|ms|s)?/[0-9]+$ ]] || { echo "bench/run.sh: --throttle takes DELAY/LIMIT, e.g. '10ms/200', not '$t'" >&2; exit 2; }
done
# without --throttle, the throttled runs of 6 use the throttle as configured
[ ${#throttles[@]} -gt 0 ] || throttles=(on)
if [ $tiny = 1 ]; then
	rows=15000 reps=1 profile=0
	ks="1 10 100 1000"; k_mem=1000; k_portal=10
	portal_secs=4 portal_rate=20 shared_buffers=128MB run_timeout=60
else
	ks="1 100 1000 10000"; k_mem=100000; k_portal=1000
	portal_secs=40 portal_rate=40 shared_buffers=1GB run_timeout=1800
fi
portal_secs=${portal_secs_opt:-$portal_secs}
k_ratio=$(echo $ks | awk '{print $3}')	# the K of run/scan (1,000)
k_big=$(echo $ks | awk '{print $NF}')		# the K compared with K=1
profile_k=${profile_k:-$k_ratio}

ensure_deps
work=$(mktemp -d /tmp/anonymize-bench.XXXXXX)
chmod 755 "$work"
trap 'jobs -p | xargs -r kill 2>/dev/null; stop_cluster "$work/cluster"' EXIT

stage_tree "$work/src"
# BENCH_PATCH=FILE: measure with a patch applied to the staged copy only
# (e.g. a fix not yet on the branch); RESULTS.md says so
patched=""
if [ -n "${BENCH_PATCH:-}" ]; then
	log "applying $BENCH_PATCH to the staged copy"
	patch -s -d "$work/src" -p1 <"$BENCH_PATCH"
	patched=" Measured with \`$(basename "$BENCH_PATCH")\` applied to the staged copy ($(grep -c '^[-+][^-+]' "$BENCH_PATCH") changed lines, not on the branch)."
fi
private_pg "$work/pg"
build_install "$work/src"
# a random free port, tried just before starting: other checkouts on this
# machine start clusters too, and the first free port may be taken by the
# time ours starts
bench_start() {
	local try port
	for try in 1 2 3 4 5; do
		port=$(shuf -i 55000-55999 -n 1)
		(echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && continue
		log "starting a throwaway cluster on port $port"
		rm -rf "$work/cluster"
		start_cluster "$work/cluster" "$port" "$@" && return 0
	done
	return 1
}
bench_start \
	"anonymize.database = 'archive'" \
	"anonymize.country_code = '47'" \
	"timezone = 'Europe/Oslo'" \
	"anonymize.enabled = off" \
	"shared_buffers = $shared_buffers" \
	"max_wal_size = 50GB" \
	"checkpoint_timeout = 1h" \
	"max_parallel_workers_per_gather = 0" \
	"max_connections = 50" \
	"autovacuum = off" \
	"${extra_conf[@]}"
export PGDATABASE=archive
as_pg createdb archive
out=$work/out
mkdir -p "$out"
chown postgres: "$out" 2>/dev/null || true

# psql on the archive, unaligned, quiet, stopping on errors
q() { as_pg psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
ms_now() { echo $(($(date +%s%N) / 1000000)); }
load1() { cut -d' ' -f1 /proc/loadavg; }
# median and min-max of numbers on stdin
stats() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "n/a"; exit}
	m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2;
	printf "%g (%g-%g)\n", m, v[1], v[NR]}'; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print ""; exit}
	print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f\n", a / b}'; }

q -c 'CREATE EXTENSION anonymize'
log "building the archive: $rows calls plus chats, emails, SMS answers and raw events"
t0=$(ms_now)
q -v rows="$rows" -f "$work/src/bench/schema.sql" >/dev/null
q -f "$work/src/bench/naive.sql" >/dev/null
q -c 'VACUUM (FREEZE, ANALYZE)'
q -c 'CHECKPOINT'
load_ms=$(($(ms_now) - t0))
persons=$(q -c 'SELECT persons FROM bench.param')
archive_rows=$(q -c "SELECT sum(c) FROM (SELECT count(*) c FROM archive.calls UNION ALL SELECT count(*) FROM archive.chats
	UNION ALL SELECT count(*) FROM archive.emails UNION ALL SELECT count(*) FROM sms.answers UNION ALL SELECT count(*) FROM raw.events) s")
archive_bytes=$(q -c "SELECT sum(pg_total_relation_size(r)) FROM (SELECT tbl AS r FROM anonymize.target
	UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = 'raw.events'::regclass) s")
heap_bytes=$(q -c "SELECT sum(pg_relation_size(r)) FROM (SELECT tbl AS r FROM anonymize.target
	UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = 'raw.events'::regclass) s")
log "archive: $archive_rows rows, $((archive_bytes / 1048576)) MB with indexes, built in ${load_ms} ms"

has_run=$(q -c "SELECT to_regprocedure('anonymize.run()') IS NOT NULL")
has_hooks=$(q -c "SELECT to_regprocedure('anonymize.is_anonymized(text)') IS NOT NULL")
has_protect=$(q -c "SELECT to_regprocedure('anonymize.protect(regclass)') IS NOT NULL")

# ---------------------------------------------------------------- 1. floor
floor_ms=""
if [ $portal_only = 0 ]; then
	log "1. the floor: one sequential scan of every target"
	targets=$(q -F' ' -c 'SELECT tbl, col FROM anonymize.target ORDER BY tbl::text')
	floor_sql=""
	while read -r tbl col; do
		floor_sql+="SELECT count(*) FROM $tbl WHERE $col LIKE '%x%';"
	done <<<"$targets"
	q -c "$floor_sql" >/dev/null	# warm the cache
	: >"$out/floor.ms"
	for i in $(seq "$reps"); do
		t0=$(ms_now)
		q -c "$floor_sql" >/dev/null
		echo $(($(ms_now) - t0)) >>"$out/floor.ms"
		echo "floor rep $i: $(tail -1 "$out/floor.ms") ms, load $(load1)" >&2
	done
	floor_ms=$(median <"$out/floor.ms")
fi

# ----------------------------------------------- sampling the run's memory
# rss_sampler FILE: every 0.1 s, the run's processes (the backend that
# called run() and any background process of the extension) and their
# peak anonymous (private) memory and VmHWM; VmHWM also counts the shared
# buffers the process touched, RssAnon does not.
rss_sampler() {
	local file=$1 pids pid anon hwm
	declare -A max_anon max_hwm kind
	while :; do
		pids=$(q -F' ' -c "SELECT pid, replace(backend_type, ' ', '_') FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND (backend_type ILIKE '%anonymi%' OR query ILIKE '%anonymize.run()%')" 2>/dev/null || true)
		while read -r pid bt; do
			[ -n "$pid" ] || continue
			anon=$(awk '/^RssAnon:/ {print $2}' /proc/"$pid"/status 2>/dev/null || true)
			hwm=$(awk '/^VmHWM:/ {print $2}' /proc/"$pid"/status 2>/dev/null || true)
			[ -n "$anon" ] && [ -n "$hwm" ] || continue
			kind[$pid]=$bt
			[ "${max_anon[$pid]:-0}" -ge "$anon" ] || max_anon[$pid]=$anon
			[ "${max_hwm[$pid]:-0}" -ge "$hwm" ] || max_hwm[$pid]=$hwm
		done <<<"$pids"
		for pid in "${!kind[@]}"; do
			echo "${kind[$pid]} $pid ${max_anon[$pid]} ${max_hwm[$pid]}"
		done >"$file.tmp"
		mv "$file.tmp" "$file"
		sleep 0.1
	done
}

# run() returns once the run has committed; its process then vacuums what
# it touched.  The cost of a run is until that process is gone.
wait_run_process() {
	local deadline=$(($(ms_now) + run_timeout * 1000))
	while [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'anonymize run()'")" != 0 ]; do
		if [ "$(ms_now)" -gt "$deadline" ]; then
			log "the run's process is still there after ${run_timeout}s:"
			q -c "SELECT pid, wait_event_type, wait_event, query FROM pg_stat_activity WHERE backend_type <> 'client backend'" >&2
			exit 1
		fi
		sleep 0.02
	done
}

# phase_sampler FILE: every 0.1 s, what the run's process reports doing
# (pg_stat_activity: marking, scanning, rewriting, finishing, vacuuming)
phase_sampler() {
	local file=$1
	while :; do
		# the run's phase, then what the portal's busy backends wait on
		# (CPU: running, or waiting for a core)
		echo "$(ms_now) $(q -c "SELECT coalesce((SELECT string_agg(split_part(split_part(query, ': ', 2), ' ', 1), ',')
				FROM pg_stat_activity WHERE backend_type = 'anonymize run()'), '-') || ' ' ||
			coalesce((SELECT string_agg(coalesce(wait_event_type || ':' || wait_event, 'CPU'), ',')
				FROM pg_stat_activity WHERE application_name = 'pgbench' AND state = 'active'), '-')" 2>/dev/null || echo '- -')" >>"$file"
		sleep 0.1
	done
}
# phase_waits NAME: in each phase of the runs during NAME, the samples
# taken and what the portal's busy backends were seen waiting on:
# "phase samples: wait count ..., ..." (a wait seen in one sample in ten
# lasted ~10 ms or more, or happened often)
phase_waits() {
	[ -s "$out/phases_$1" ] || return 0
	awk '$2 != "-" && $2 != "" {n[$2]++; if ($3 != "-" && $3 != "") {k = split($3, w, ",");
			for (i = 1; i <= k; i++) c[$2 " " w[i]]++}}
		END {for (p in n) {printf "%s %d samples:", p, n[p];
			for (x in c) {split(x, y, " "); if (y[1] == p) printf " %s %d", y[2], c[x]}; printf "; "}; print ""}' "$out/phases_$1"
}
# phases TAG: ms in each phase of run TAG (from the samples), "phase=ms ..."
phases() {
	local from to
	read -r from to < <(awk -v t="$1" '$1 == t {print $2, $3}' "$out/run_times")
	awk -v from="$from" -v to="$to" '$1 >= from && $1 <= to && $2 != "-" && $2 != "" {n[$2]++; tot++}
		END {for (p in n) printf "%s %d ms, ", p, n[p] * (to - from) / (tot ? tot : 1); print ""}' "$out/phases"
}

# scrub_line TAG: the page scrub of the run that just ended, from its log
# line, appended to $out/scrub as "TAG ms wal_bytes fpi scrubbed read
# note_ms" (note_ms: noting the pages before the rewrites)
scrub_line() {
	grep -a 'anonymize run [0-9]*: scrubbed' "$work/cluster/server.log" | tail -1 |
		sed -E 's/.*scrubbed ([0-9]+) of ([0-9]+) pages read in [0-9]+ relations \(([0-9.]+) ms, ([0-9]+) WAL bytes, ([0-9]+) full-page images\); noting the pages took ([0-9.]+) ms.*/\3 \4 \5 \1 \2 \6/' |
		awk -v t="$1" 'NF == 6 {print t, $0}' >>"$out/scrub"
}
# vacuum_line TAG: the vacuum of the run that just ended, from the server
# log's timestamps (log_line_prefix '%m'): from the line that says the run
# finished (committed) to the scrub's line, less the scrub's own time;
# appended to $out/vacuum as "TAG ms"
vacuum_line() {
	local fin scr ms
	fin=$(grep -a 'anonymize run [0-9]* finished:' "$work/cluster/server.log" | tail -1 | awk '{print $1 " " $2}')
	scr=$(grep -a 'anonymize run [0-9]*: scrubbed' "$work/cluster/server.log" | tail -1)
	[ -n "$fin" ] && [ -n "$scr" ] || return 0
	ms=$(echo "$scr" | sed -E 's/.*pages read in [0-9]+ relations \(([0-9.]+) ms.*/\1/')
	awk -v t="$1" -v a="$(date -d "$fin" +%s.%N)" -v b="$(date -d "$(echo "$scr" | awk '{print $1 " " $2}')" +%s.%N)" -v s="$ms" \
		'BEGIN {printf "%s %d\n", t, (b - a) * 1000 - s}' >>"$out/vacuum"
}
# keys_line TAG: the live index keys the run that just ended cleared, from
# its log lines: appended to $out/keys as "TAG separators indexes rebuilt"
# (separators rewritten in place, in how many indexes; indexes rebuilt)
keys_line() {
	local id
	id=$(grep -a 'anonymize run [0-9]*: scrubbed' "$work/cluster/server.log" | tail -1 |
		sed -E 's/.*anonymize run ([0-9]+): scrubbed.*/\1/')
	[ -n "$id" ] || return 0
	{ grep -a "anonymize run $id: \(rewrote\|rebuilt index\)" "$work/cluster/server.log" || true; } |
		awk -v t="$1" '/rewrote/ {for (i = 1; i <= NF; i++) if ($i == "rewrote") s += $(i + 1); n++}
			/rebuilt index/ {r++} END {printf "%s %d %d %d\n", t, s, n, r}' >>"$out/keys"
}
# keys_row K: what the runs of K cleared of live index keys (medians)
keys_row() {
	local k=$1 f
	[ -s "$out/keys" ] || return 0
	f() { awk -v k="$k" -v c="$1" 'NR == FNR {if ($1 == k) t[$7] = 1; next} ($1 in t) {print $c}' "$out/runs" "$out/keys" | median; }
	echo "| live index keys cleared in run(), K = $k | $(f 2) btree separators rewritten in place in $(f 3) indexes; $(f 4) indexes rebuilt |"
}
# scrub_row K: the scrub's share of the runs of K (medians), for RESULTS.md
scrub_row() {
	local k=$1 f
	[ -s "$out/scrub" ] || { echo "| page scrub in run(), K = $k | not measured (no scrub) |"; return; }
	f() { awk -v k="$k" -v c="$1" 'NR == FNR {if ($1 == k && $7 ~ /^k/) {ms[$7] = $2; wal[$7] = $3}; next}
		($1 in ms) {v[1] = $2; v[2] = $3; v[3] = $4; v[4] = $5; v[5] = $6;
			v[6] = ms[$1] ? 100 * $2 / ms[$1] : 0; v[7] = wal[$1] ? 100 * $3 / wal[$1] : 0;
			v[8] = $5 ? $3 / $5 : 0; v[9] = $7; v[10] = ms[$1] ? 100 * $7 / ms[$1] : 0;
			print v[c]}' "$out/runs" "$out/scrub" | median |
		awk -v c="$1" '{if (c >= 6 && c != 8) printf "%.1f\n", $1; else if (c == 1) print $1; else printf "%d\n", $1}'; }
	echo "| page scrub in run(), K = $k | $(f 1) ms ($(f 6) % of the run), and $(f 9) ms ($(f 10) %) noting the pages before the rewrites; WAL $(f 2) bytes ($(f 7) % of the run's WAL), $(f 3) full-page images, $(f 8) bytes a scrubbed page; $(f 4) pages scrubbed of $(f 5) read |"
}

# run_once K TAG: file K fresh requests and run them; appends
# "K ms wal_bytes rows_rewritten done load" to $out/runs
run_once() {
	local k=$1 tag=$2 before lsn0 t0 ms wal res load
	before=$(q -c 'SELECT coalesce(max(id), 0) FROM anonymize.anonymize_request')
	q -c "SELECT bench.file_requests($k)" >/dev/null
	load=$(load1)
	# as at night: a checkpoint since the day's writes, so that the first
	# change of a page after it writes a full-page image
	q -c 'CHECKPOINT'
	lsn0=$(q -c 'SELECT pg_current_wal_insert_lsn()')
	t0=$(ms_now)
	q -c 'SELECT anonymize.run()' >"$out/run.$tag.out"
	cms=$(($(ms_now) - t0))
	wait_run_process
	ms=$(($(ms_now) - t0))
	echo "$tag $t0 $(ms_now)" >>"$out/run_times"
	wal=$(q -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn0')::bigint")
	res=$(q -F' ' -c "SELECT count(*) FILTER (WHERE status = 'Done'), coalesce(sum(rows_anonymized), 0)
		FROM anonymize.anonymize_request WHERE id > $before AND comment = 'bench'")
	set -- $res
	echo "$k $ms $wal $2 $1 $load $tag $cms" >>"$out/runs"
	scrub_line "$tag"
	vacuum_line "$tag"
	keys_line "$tag"
	echo "run K=$k: $ms ms ($cms ms until run() returned), $1 done, $2 rows rewritten, $wal WAL bytes, load $load" >&2
	if [ "$1" != "$k" ]; then
		log "run K=$k finished only $1 of $k requests"
		q -c "SELECT status, error, count(*) FROM anonymize.anonymize_request WHERE id > $before GROUP BY 1, 2" >&2
		return 1
	fi
}

: >"$out/runs"
: >"$out/scrub"
: >"$out/vacuum"
# the throttle (anonymize.cost_delay, cost_limit) as configured: the runs
# below are measured at full speed, and section 6 compares both
has_throttle=$(q -c "SELECT count(*) > 0 FROM pg_settings WHERE name = 'anonymize.cost_delay'")
throttle_conf=""
if [ "$has_throttle" = t ]; then
	throttle_conf="cost_delay $(q -c 'SHOW anonymize.cost_delay'), cost_limit $(q -c 'SHOW anonymize.cost_limit')"
fi
# throttle_desc on|DELAY/LIMIT: the throttle, as RESULTS.md names it
throttle_desc() { if [ "$1" = on ]; then echo "$throttle_conf"; else echo "cost_delay ${1%/*}, cost_limit ${1#*/}"; fi; }
# set_throttle on|off|DELAY/LIMIT: the server's configuration, which run()
# reads: as configured, full speed, or the throttle given
set_throttle() {
	[ "$has_throttle" = t ] || return 0
	case $1 in
		off) q -c 'ALTER SYSTEM SET anonymize.cost_delay = 0' ;;
		on) q -c 'ALTER SYSTEM RESET anonymize.cost_delay'; q -c 'ALTER SYSTEM RESET anonymize.cost_limit' ;;
		*) q -c "ALTER SYSTEM SET anonymize.cost_delay = '${1%/*}'"; q -c "ALTER SYSTEM SET anonymize.cost_limit = ${1#*/}" ;;
	esac
	q -c 'SELECT pg_reload_conf()' >/dev/null
	sleep 0.5
}
set_throttle off

if [ $portal_only = 1 ]; then
	log "--portal-only: skipping 1 to 5, 7 and 8"
elif [ "$has_run" = t ]; then
	# ------------------------------------------------- 2. and 5. runs
	log "2. run() for K = $ks ($reps times each, fresh requests each time)"
	phase_sampler "$out/phases" &
	psampler=$!
	for i in $(seq "$reps"); do
		for k in $ks; do run_once "$k" "k$k.r$i"; echo "  phases: $(phases "k$k.r$i")" >&2; done
	done
	kill "$psampler" 2>/dev/null || true; wait "$psampler" 2>/dev/null || true

	# correctness, cheaply: the last batch's persons are gone everywhere
	last=$(q -c 'SELECT next_person - 1 FROM bench.param')
	left=$(q -c "WITH p AS (SELECT g AS p, anonymize.normalize_phone(CASE WHEN bench.cc(g) = '47' THEN bench.national(g)
			ELSE '00' || bench.cc(g) || bench.national(g) END) AS phone, bench.email(g) AS email
			FROM generate_series($last - 9, $last) g)
		SELECT (SELECT count(*) FROM archive.calls WHERE bench.sql_canon_phone(caller) IN (SELECT phone FROM p))
			 + (SELECT count(*) FROM archive.emails WHERE bench.sql_canon_email(from_addr) IN (SELECT email FROM p))
			 + (SELECT count(*) FROM raw.events WHERE bench.sql_canon_phone(number) IN (SELECT phone FROM p))")
	echo "rows of the last 10 erased persons still in calls, emails, events: $left" >&2
	[ "$left" = 0 ] || { log "the run left $left rows of erased persons"; exit 1; }

	# ------------------------------------------------- 4. memory
	log "4. the run's peak memory at K = $k_mem"
	rss_sampler "$out/rss" &
	sampler=$!
	run_once "$k_mem" "mem"
	sleep 0.3
	kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
	cat "$out/rss" >&2 || true

	# ------------------------------------------------- profile
	if [ $profile = 1 ] && command -v perf >/dev/null; then
		log "profiling a run of K = $profile_k with perf (cpu-clock)"
		q -c "SELECT bench.file_requests($profile_k)" >/dev/null
		q -c 'SELECT anonymize.run()' >/dev/null &
		runner=$!
		pids=""
		# the run's own process, once it exists (run() starts it)
		for _ in $(seq 250); do
			pids=$(q -c "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'anonymize run()'")
			[ -n "$pids" ] && break
			sleep 0.02
		done
		if [ -n "$pids" ]; then
			perf record -e cpu-clock -F 999 -g -o "$out/perf.data" -p "$pids" >/dev/null 2>&1 &
			perfpid=$!
			wait "$runner" || true
			wait_run_process
			kill -INT "$perfpid" 2>/dev/null || true; wait "$perfpid" 2>/dev/null || true
			perf report -i "$out/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null |
				grep -v '^$' | grep -E '^ +[0-9]' | head -40 >"$out/perf.txt" || true
			perf report -i "$out/perf.data" --stdio --children --sort symbol 2>/dev/null |
				grep -E '^ +[0-9]' | head -40 >"$out/perf-children.txt" || true
			perf report -i "$out/perf.data" --stdio --no-children -g none --sort symbol 2>/dev/null |
				grep -E '^ +[0-9]' >"$out/perf-flat.txt" || true
			command -v python3 >/dev/null &&
				python3 "$work/src/bench/perf-categories.py" "$out/perf-flat.txt" >"$out/perf-categories.txt" || true
			cat "$out/perf-categories.txt" >&2 || true
		else
			wait "$runner" || true
		fi
	fi
else
	log "anonymize.run() does not exist on this branch: skipping 2, 4, 5 and the run's half of 6"
fi

# ------------------------------------------------------ 8. rewrite floor
# What rewriting the same number of rows costs in plain SQL: one UPDATE per
# target of rows spread over the table like the run's (id % m), then the
# VACUUM (INDEX_CLEANUP ON) the run does.  The run cannot rewrite for less.
bulk_ms="" bulk_wal="" bulk_rows=""
rows_big=$(awk -v k="$k_big" '$1 == k && $7 ~ /^k/ {print $4}' "$out/runs" | median)
if [ -n "$rows_big" ] && [ "$rows_big" -gt 0 ]; then
	log "8. the rewrite floor: $rows_big rows by plain UPDATE, then VACUUM"
	m=$(awk -v a="$archive_rows" -v r="$rows_big" 'BEGIN {m = int(a / r + 0.5); print (m < 1) ? 1 : m}')
	bulk_sql=""
	while read -r tbl col; do
		bulk_sql+="UPDATE $tbl SET $col = 'Anonymized' WHERE id % $m = $((m - 1)) AND $col <> 'Anonymized';"
	done <<<"$targets"
	q -c 'CHECKPOINT'
	lsn0=$(q -c 'SELECT pg_current_wal_insert_lsn()')
	t0=$(ms_now)
	q -c "$bulk_sql" >/dev/null
	bulk_upd_ms=$(($(ms_now) - t0))
	q -c "VACUUM (INDEX_CLEANUP ON, PARALLEL 0) $(echo "$targets" | awk '{print $1}' | paste -sd, -)"
	bulk_ms=$(($(ms_now) - t0))
	bulk_wal=$(q -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn0')::bigint")
	bulk_rows=$(q -c "SELECT count(*) FROM (SELECT id FROM archive.calls WHERE id % $m = $((m - 1)) UNION ALL SELECT id FROM archive.chats WHERE id % $m = $((m - 1))
		UNION ALL SELECT id FROM archive.emails WHERE id % $m = $((m - 1)) UNION ALL SELECT id FROM sms.answers WHERE id % $m = $((m - 1))
		UNION ALL SELECT id FROM raw.events WHERE id % $m = $((m - 1))) s")
	echo "rewrite floor: about $bulk_rows rows, UPDATE $bulk_upd_ms ms, with VACUUM $bulk_ms ms, WAL $bulk_wal bytes, load $(load1)" >&2
fi

# ---------------------------------------------------------------- 3. peer
naive_ms="" naive_wal=0 naive_rows=0
if [ $portal_only = 0 ]; then
	log "3. the peer: one hand-written normalizing UPDATE per request, sampled"
	first=$(q -c "SELECT bench.take_persons(5)")
	: >"$out/naive.ms"
	for p in $(seq "$first" $((first + 4))); do
		q -c 'CHECKPOINT'
		lsn0=$(q -c 'SELECT pg_current_wal_insert_lsn()')
		t0=$(ms_now)
		n=$(q -c "SELECT bench.naive_erase($p)")
		echo $(($(ms_now) - t0)) >>"$out/naive.ms"
		naive_rows=$((naive_rows + n))
		naive_wal=$((naive_wal + $(q -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$lsn0')::bigint")))
		echo "peer request $p: $(tail -1 "$out/naive.ms") ms, $n rows, load $(load1)" >&2
	done
	naive_ms=$(median <"$out/naive.ms")
fi

# ---------------------------------------------------------------- 6. portal
# pgbench_phase NAME: the portal script at a steady rate for portal_secs
pgbench_phase() {
	(cd "$out" && as_pg pgbench -n -f "$work/src/bench/portal.pgbench" -D persons="$persons" \
		-R "$portal_rate" -T "$portal_secs" -c 2 -j 1 -r -l --log-prefix="pgb_$1" archive \
		>"$out/pgbench_$1.txt" 2>&1)
}
# latencies (ms) of the transactions that ended within [from, to) ms epoch
latencies() {
	cat "$out"/pgb_"$1".* | awk -v from="$2" -v to="$3" '{end = $5 * 1000 + $6 / 1000;
		if (end >= from && end < to) printf "%.3f\n", $3 / 1000}'
}
pct() { sort -g | awk -v p="$1" '{v[NR]=$1} END {if (NR==0) {print ""; exit}
	i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print v[i]}'; }

log "6. portal latency: pgbench at $portal_rate tps for ${portal_secs}s without a run"
load_without=$(load1)
# the sampler of the runs' phases runs here too: its psql every 0.1 s
# costs the portal the same with a run and without
phase_sampler "$out/phases_without" &
wsampler=$!
pgbench_phase without
kill "$wsampler" 2>/dev/null || true; wait "$wsampler" 2>/dev/null || true
latencies without 0 99999999999999 >"$out/lat_without"
p50_without=$(pct 50 <"$out/lat_without")
p99_without=$(pct 99 <"$out/lat_without")
n_without=$(wc -l <"$out/lat_without")
# portal_runs NAME: the portal script during back-to-back runs of
# K = k_portal; sets p50_NAME, p99_NAME, n_NAME, load_NAME, runs_NAME and
# runms_NAME (the median run, its vacuum included)
portal_runs() {
	local name=$1 nruns=0 t0 bench_pid sampler_pid
	log "6. portal latency during runs of K = $k_portal, back to back ($name)"
	printf -v "load_$name" '%s' "$(load1)"
	pgbench_phase "$name" &
	bench_pid=$!
	: >"$out/run_windows_$name"
	phase_sampler "$out/phases_$name" &
	sampler_pid=$!
	sleep 1
	while kill -0 "$bench_pid" 2>/dev/null; do
		q -c "SELECT bench.file_requests($k_portal)" >/dev/null
		t0=$(ms_now)
		q -c 'SELECT anonymize.run()' >/dev/null
		wait_run_process
		echo "$t0 $(ms_now)" >>"$out/run_windows_$name"
		nruns=$((nruns + 1))
	done
	wait "$bench_pid" || true
	kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true
	: >"$out/lat_$name"
	while read -r from to; do latencies "$name" "$from" "$to" >>"$out/lat_$name"; done <"$out/run_windows_$name"
	printf -v "p50_$name" '%s' "$(pct 50 <"$out/lat_$name")"
	printf -v "p99_$name" '%s' "$(pct 99 <"$out/lat_$name")"
	printf -v "n_$name" '%s' "$(wc -l <"$out/lat_$name")"
	printf -v "runs_$name" '%s' "$nruns"
	printf -v "runms_$name" '%s' "$(awk '{print $2 - $1}' "$out/run_windows_$name" | median)"
}
# phase_p99 NAME: the portal's p99 (ms) and transaction count in each phase
# of the runs during NAME, each transaction put in the phase the sampler
# last saw before it ended: "phase p99 (n), ..."
phase_p99() {
	[ -s "$out/phases_$1" ] || return 0
	{ awk '{print $1, "P", $2}' "$out/phases_$1"
	  cat "$out"/pgb_"$1".* | awk '{printf "%.0f T %.3f\n", $5 * 1000 + $6 / 1000, $3 / 1000}'; } |
		sort -n -k1,1 -s |
		awk '$2 == "P" {ph = $3; next} ph != "" && ph != "-" {print ph, $3}' |
		sort -k1,1 -k2,2g |
		awk '{v[$1, ++n[$1]] = $2} END {for (p in n) {i = int(n[p] * 0.99 + 0.999); if (i < 1) i = 1;
			printf "%s %s ms (%d), ", p, v[p, i], n[p]}; print ""}'
}
p50_during="" p99_during="" n_during=0 load_during="" runs_during=0 runms_during=""
if [ "$has_run" = t ]; then
	portal_runs during
	if [ "$has_throttle" = t ]; then
		for i in "${!throttles[@]}"; do
			set_throttle "${throttles[$i]}"
			portal_runs "throttled$i"
		done
		set_throttle off
	fi
fi
# tv FIELD I: FIELD (p50, p99, n, load, runs, runms) of the throttled runs
# at throttles[I], empty if they were not measured
tv() { local v=$1_throttled$2; echo "${!v:-}"; }

# ---------------------------------------------------------------- 7. hooks
hooks_line="is_anonymized() does not exist on this branch: skipped"
protect_line="protect() does not exist on this branch: skipped"
if [ $portal_only = 1 ]; then
	hooks_line="is_anonymized(): not measured (--portal-only)" protect_line="protect(): not measured (--portal-only)"
	has_hooks=f has_protect=f
fi
if [ "$has_hooks" = t ]; then
	log "7. is_anonymized(): 20,000 calls"
	t0=$(ms_now)
	q -c "SELECT count(*) FILTER (WHERE anonymize.is_anonymized((40000000 + g)::text)) FROM generate_series(1, 20000) g" >/dev/null
	ms=$(($(ms_now) - t0))
	hooks_line="is_anonymized(): $(awk -v ms="$ms" 'BEGIN {printf "%.1f", ms * 1000 / 20000}') µs a call (20,000 calls, $ms ms, load $(load1))"
fi
if [ "$has_protect" = t ]; then
	log "7. protect(): the portal's search by number, unprotected and protected"
	q -c "CREATE ROLE bench_portal LOGIN; GRANT USAGE ON SCHEMA archive TO bench_portal;
		GRANT SELECT ON archive.calls TO bench_portal" >/dev/null
	cat >"$out/search.pgbench" <<'EOF'
\set p random(1, :persons)
SELECT id, started_at, queue, caller FROM archive.calls
 WHERE caller IN ('+47' || (40000000 + :p), '0047' || (40000000 + :p), (40000000 + :p)::text);
EOF
	search() { (cd "$out" && as_pg pgbench -n -U bench_portal -f "$out/search.pgbench" -D persons="$persons" \
		-t 2000 -c 1 archive 2>&1 | awk '/latency average/ {print $4}'); }
	lat_plain=$(search)
	q -c "SELECT anonymize.protect('archive.calls')" >/dev/null
	lat_prot=$(search)
	q -c "SELECT anonymize.unprotect('archive.calls')" >/dev/null
	protect_line="protect(): search by number $lat_plain ms unprotected, $lat_prot ms protected ($(ratio "$lat_prot" "$lat_plain")x; 2,000 searches each, load $(load1))"
fi

# ---------------------------------------------------------------- the table
runs_k() { awk -v k="$1" '$1 == k && $7 ~ /^k/ {print $2}' "$out/runs"; }
run_med() { runs_k "$1" | median; }
mem_anon=$(awk '{if ($3 > m) m = $3} END {print m + 0}' "$out/rss" 2>/dev/null || echo 0)
mem_hwm=$(awk '{if ($4 > m) m = $4} END {print m + 0}' "$out/rss" 2>/dev/null || echo 0)
mem_who=$(awk '{if ($3 > m) {m = $3; w = $1}} END {print w}' "$out/rss" 2>/dev/null || true)
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {if (v == "n/a" || v == "") print "not measured";
	else if ((op == "<=" && v + 0 <= t + 0) || (op == ">=" && v + 0 >= t + 0)) print "met"; else print "MISSED"}'; }

res=$out/RESULTS.md
{
	echo "# anonymize benchmark results"
	echo
	echo "Produced by \`bench/run.sh$([ $tiny = 1 ] && echo ' --tiny') --rows $rows --reps $reps$(for c in "${extra_conf[@]}"; do printf " --conf '%s'" "$c"; done)$([ $portal_only = 1 ] && echo ' --portal-only')$([ -n "$portal_secs_opt" ] && echo " --portal-secs $portal_secs_opt")$(for t in "${throttles[@]}"; do [ "$t" = on ] || printf " --throttle '%s'" "$t"; done)\` on $(date -u '+%Y-%m-%d %H:%M UTC'), branch \`$(git -C "$TOP" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?')\` at \`$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')\`.$patched"
	echo
	echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo) memory, $(as_pg "$PG_BIN/postgres" --version), shared_buffers $shared_buffers, fsync off, parallel query off, autovacuum off (so that the WAL measured is the run's alone; the run vacuums what it touched itself), a CHECKPOINT before each measured run and peer request (so WAL includes the full-page images a nightly run writes). The cores are shared with other work: the load average (1 min) is given next to each number."
	echo
	echo "Archive: $archive_rows rows in 5 targets ($rows calls, $((rows / 10)) chats, $((rows / 10)) emails, $((rows / 5)) SMS answers, $((rows / 2)) raw events in half-year partitions), $((heap_bytes / 1048576)) MB of heap, $((archive_bytes / 1048576)) MB with indexes; $persons persons, each with a few rows in every target. Built in $((load_ms / 1000)) s."
	echo
	echo "Numbers are the median of $reps repetitions, with (min-max)."
	echo
	echo "| measurement | value |"
	echo "|---|---|"
	if [ $portal_only = 0 ]; then
		echo "| floor: one sequential scan of every target | $(stats <"$out/floor.ms") ms |"
		for k in $ks; do
			if [ -n "$(runs_k "$k")" ]; then
				echo "| run(), K = $k | $(runs_k "$k" | stats) ms (run() returned after $(awk -v k="$k" '$1 == k && $7 ~ /^k/ {print $8}' "$out/runs" | median) ms, before its vacuum); $(awk -v k="$k" '$1 == k && $7 ~ /^k/ {print $4}' "$out/runs" | median) rows rewritten; WAL $(awk -v k="$k" '$1 == k && $7 ~ /^k/ {print $3}' "$out/runs" | median) bytes; load $(awk -v k="$k" '$1 == k && $7 ~ /^k/ {printf "%s ", $6}' "$out/runs") |"
			else
				echo "| run(), K = $k | not measured (no run()) |"
			fi
		done
	fi
	if [ -n "$(runs_k 1)" ]; then
		for k in $ks; do scrub_row "$k"; done
		for k in $ks; do keys_row "$k"; done
	fi
	if [ -n "$bulk_ms" ]; then
		echo "| rewrite floor: about $bulk_rows rows (as many as K = $k_big) by one plain UPDATE per target, then VACUUM (INDEX_CLEANUP ON) | $bulk_ms ms ($bulk_upd_ms ms UPDATE); WAL $bulk_wal bytes |"
	fi
	[ -z "$naive_ms" ] || echo "| peer: one hand-written UPDATE per request (5 sampled) | $(stats <"$out/naive.ms") ms a request; $naive_rows rows rewritten by the 5; WAL $((naive_wal / 5)) bytes a request |"
	if [ -s "$out/rss" ]; then
		echo "| run(), K = $k_mem | $(awk '$7 == "mem" {print $2 " ms; " $4 " rows rewritten; WAL " $3 " bytes; load " $6}' "$out/runs") |"
		echo "| peak private memory (RssAnon) at K = $k_mem | $((mem_anon / 1024)) MB ($mem_who; VmHWM incl. shared buffers touched: $((mem_hwm / 1024)) MB; sampled every 0.1 s) |"
	fi
	echo "| portal without a run: p50 / p99 | $p50_without / $p99_without ms ($n_without transactions at $portal_rate tps, load $load_without) |"
	if [ -n "$p99_during" ]; then
		echo "| portal during runs at full speed: p50 / p99 | $p50_during / $p99_during ms ($n_during transactions during $runs_during runs of K = $k_portal, each $runms_during ms, load $load_during) |"
	fi
	if [ -n "$p99_during" ]; then
		echo "| portal p99 by the run's phase at full speed (phase: p99 (transactions)) | $(phase_p99 during) |"
		echo "| what the portal's busy backends waited on, by the run's phase, at full speed (0.1 s samples) | $(phase_waits during) |"
	fi
	for i in "${!throttles[@]}"; do
		[ -n "$(tv p99 "$i")" ] || continue
		echo "| portal p99 by the run's phase, throttled ($(throttle_desc "${throttles[$i]}")) | $(phase_p99 "throttled$i") |"
		echo "| what the portal's busy backends waited on, by the run's phase, throttled ($(throttle_desc "${throttles[$i]}")) | $(phase_waits "throttled$i") |"
	done
	for i in "${!throttles[@]}"; do
		[ -n "$(tv p99 "$i")" ] || continue
		echo "| portal during throttled runs ($(throttle_desc "${throttles[$i]}")): p50 / p99 | $(tv p50 "$i") / $(tv p99 "$i") ms ($(tv n "$i") transactions during $(tv runs "$i") runs of K = $k_portal, each $(tv runms "$i") ms, load $(tv load "$i")) |"
		echo "| the throttle's price ($(throttle_desc "${throttles[$i]}")): a run of K = $k_portal throttled / at full speed | $(tv runms "$i") / $runms_during ms ($(ratio "$(tv runms "$i")" "$runms_during")x) |"
	done
	if [ -s "$out/vacuum" ]; then
		for k in $ks; do
			vac=$(awk -v k="$k" 'NR == FNR {v[$1] = $2; next} $1 == k && ($7 in v) {print v[$7]}' "$out/vacuum" "$out/runs" | median)
			share=$(awk -v k="$k" 'NR == FNR {v[$1] = $2; next} $1 == k && ($7 in v) && $2 > 0 {print 100 * v[$7] / $2}' "$out/vacuum" "$out/runs" | median)
			echo "| the vacuum's share of run(), K = $k (server log: from the run's commit to its scrub, less the scrub) | ${vac:-n/a} ms ($(awk -v s="${share:-0}" 'BEGIN {printf "%.0f", s}') % of the run) |"
		done
	fi
	echo "| $hooks_line | |"
	echo "| $protect_line | |"
	echo
	echo "## Ratios against the targets"
	echo
	r_scan=$(ratio "$(run_med "$k_ratio")" "$floor_ms")
	r_k=$(ratio "$(run_med "$k_big")" "$(run_med 1)")
	r_naive=$(ratio "$(awk -v n="$naive_ms" -v k="$k_ratio" 'BEGIN {print n * k}')" "$(run_med "$k_ratio")")
	r_naive_big=$(ratio "$(awk -v n="$naive_ms" -v k="$k_big" 'BEGIN {print n * k}')" "$(run_med "$k_big")")
	r_p99=$(ratio "$p99_during" "$p99_without")
	r_floor=""
	[ -n "$bulk_ms" ] && r_floor=$(ratio "$(run_med "$k_big")" "$((floor_ms + bulk_ms))")
	wal_row=$(awk '$7 ~ /^k/ && $4 > 0 {print $3 / $4}' "$out/runs" | median)
	wal_k1=$(awk '$1 == 1 && $7 ~ /^k/ {print $3}' "$out/runs" | median)
	r_wal_tab=$(ratio "$wal_k1" "$heap_bytes")
	echo "| ratio | measured | target | |"
	echo "|---|---|---|---|"
	echo "| run/scan at K = $k_ratio | $r_scan | <= 1.5 | $(verdict "$r_scan" "<=" 1.5) |"
	echo "| K = $k_big against K = 1 | $r_k | <= 1.25 | $(verdict "$r_k" "<=" 1.25) |"
	echo "| naive/run at K = $k_ratio (peer extrapolated) | $r_naive | >= 100 | $(verdict "$r_naive" ">=" 100) |"
	echo "| naive/run at K = $k_big (peer extrapolated) | $r_naive_big | >= 100 | $(verdict "$r_naive_big" ">=" 100) |"
	if [ -s "$out/rss" ]; then
		echo "| peak private memory at K = $k_mem | $((mem_anon / 1024)) MB | < 64 MB | $(verdict "$((mem_anon / 1024))" "<=" 63.99) |"
	else
		echo "| peak private memory at K = $k_mem | n/a | < 64 MB | not measured |"
	fi
	echo "| WAL bytes per row rewritten (median over runs) | ${wal_row:-n/a} | proportional to rows | see WAL of K = 1 |"
	echo "| WAL of a K = 1 run / heap size of the targets | $r_wal_tab | ~0 (not the table) | $(verdict "$r_wal_tab" "<=" 0.05) |"
	echo "| portal p99 during / without a run, full speed | $r_p99 | <= 1.25 | $(verdict "$r_p99" "<=" 1.25) |"
	for i in "${!throttles[@]}"; do
		r=$(ratio "$(tv p99 "$i")" "$p99_without")
		echo "| portal p99 during / without a run, throttled ($(throttle_desc "${throttles[$i]}")) | $r | <= 1.5 | $(verdict "$r" "<=" 1.5) |"
	done
	echo "| run at K = $k_big / (scan floor + rewrite floor + its vacuum) | ${r_floor:-n/a} | <= 1.2 | $(verdict "${r_floor:-n/a}" "<=" 1.2) |"
	echo
	if [ -s "$out/run_times" ] && [ -s "$out/phases" ]; then
		echo "Where a run's time goes, from its reported activity sampled every 0.1 s (approximate; the first repetition of each K):"
		echo
		for k in $ks; do echo "- K = $k: $(phases "k$k.r1")"; done
		echo
	fi
	for ph in without during $(printf 'throttled%s ' "${!throttles[@]}"); do
		[ -s "$out/pgbench_$ph.txt" ] || continue
		echo "Portal statements, average latency (ms) $ph a run (pgbench -r):"
		echo
		echo '```'
		sed -n '/statement latencies/,$p' "$out/pgbench_$ph.txt" | grep -v 'set [a-z] ' | sed 's/^ *//'
		echo '```'
		echo
	done
	echo "Raw runs (K, ms until the run's process ended (its vacuum included), WAL bytes, rows rewritten, requests done, load, tag, ms until run() returned):"
	echo
	echo '```'
	cat "$out/runs"
	echo '```'
	if [ -s "$out/perf.txt" ]; then
		echo
		echo "Profile of one run of K = $profile_k (perf, cpu-clock, self time of the run's processes; $(perf report -i "$out/perf.data" --stdio 2>/dev/null | awk '/^# Samples/ {print $3}') samples), by kind of work (bench/perf-categories.py):"
		echo
		echo '```'
		cat "$out/perf-categories.txt" 2>/dev/null
		echo '```'
		echo
		echo "Top symbols (unnamed postgres addresses are static functions: 0x2f09xx lies in commands/vacuum.c, the TID comparison of index bulk-delete; 0x1b9xxx in nbtree.c, btvacuumpage):"
		echo
		echo '```'
		head -25 "$out/perf-flat.txt" | sed 's/ *$//'
		echo '```'
	fi
} >"$res"
cat "$res"
if [ $tiny = 0 ]; then
	cp "$res" "$TOP/bench/RESULTS.md"
	mkdir -p "$TOP/bench/out"
	cp -r "$out"/. "$TOP/bench/out/" 2>/dev/null || true
	log "wrote bench/RESULTS.md (raw files in bench/out/)"
else
	log "tiny benchmark finished (results in $res, not kept)"
fi
stop_cluster "$work/cluster"
rm -rf "$work"
