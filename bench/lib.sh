# bench/lib.sh: what the benchmark scripts share (sourced after
# tools/lib.sh, with PGDATABASE set): psql, the clock, medians and ratios,
# the load, and waiting for a run's process to leave.

# q ARGS...: psql as the cluster's user, unaligned, stopping at an error
q() { as_pg psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
# ms_now: the time in ms
ms_now() { echo $(($(date +%s%N) / 1000000)); }
# median: the median of the numbers on stdin
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
# ratio A B: A / B with two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f\n", a / b}'; }
# load1: the load average over the last minute
load1() { cut -d' ' -f1 /proc/loadavg; }

# wait_run_gone: until run()'s process (which vacuums after run() has
# returned) has left
wait_run_gone() {
	while [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'anonymize run()'")" != 0 ]; do
		sleep 0.02
	done
}

# timed_run FILE: run() until its process has left, with what the process
# reports doing sampled every 0.05 s into FILE, a line "ms step" each
# (step: scanning, looking, rewriting, vacuuming...); prints the ms
timed_run() {
	local t0 ms sampler
	q >"$1.raw" 2>/dev/null <<<"SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
		split_part(split_part(query, ': ', 2), ' ', 1)
		FROM pg_stat_activity WHERE backend_type = 'anonymize run()' \\watch 0.05" &
	sampler=$!
	t0=$(ms_now)
	q -c 'SELECT anonymize.run()' >/dev/null
	wait_run_gone
	ms=$(($(ms_now) - t0))
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	awk -F'|' 'NF > 1 {print $1, $2}' "$1.raw" >"$1"
	echo "$ms"
}

# bench_cluster NAME SETTING...: the extension built from this tree into a
# private PostgreSQL and a throwaway cluster (settings of every benchmark,
# then the given ones) with the database archive, stopped on exit; sets
# work (the work directory) and port
bench_cluster() {
	local name=$1
	shift
	ensure_deps
	work=$(mktemp -d "/tmp/anonymize-bench-$name.XXXXXX")
	chmod 755 "$work"
	trap 'jobs -p | xargs -r kill 2>/dev/null; stop_cluster "$work/cluster"' EXIT
	stage_tree "$work/src"
	private_pg "$work/pg"
	build_install "$work/src"
	port=$(shuf -i 56000-57999 -n 1)
	start_cluster "$work/cluster" "$port" \
		"anonymize.database = 'archive'" "anonymize.country_code = '47'" \
		"timezone = 'Europe/Oslo'" "anonymize.enabled = off" "shared_buffers = 1GB" \
		"max_wal_size = 50GB" "checkpoint_timeout = 1h" "autovacuum = off" "$@"
	export PGDATABASE=archive
	as_pg createdb archive
}

# bench_archive ROWS: the extension and the benchmark archive
# (bench/schema.sql: ROWS calls plus chats, emails, SMS answers and the
# partitioned raw events), frozen and checkpointed; sets archive_rows
bench_archive() {
	q -c 'CREATE EXTENSION anonymize'
	log "building the archive: $1 calls plus chats, emails, SMS answers and raw events"
	q -v rows="$1" -f "$work/src/bench/schema.sql" >/dev/null
	q -c 'VACUUM (FREEZE, ANALYZE)'
	q -c 'CHECKPOINT'
	archive_rows=$(q -c "SELECT sum(c) FROM (SELECT count(*) c FROM archive.calls UNION ALL SELECT count(*) FROM archive.chats
		UNION ALL SELECT count(*) FROM archive.emails UNION ALL SELECT count(*) FROM sms.answers UNION ALL SELECT count(*) FROM raw.events) s")
}
