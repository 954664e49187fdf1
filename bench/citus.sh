#!/usr/bin/env bash
# bench/citus.sh: the same archive erased on one node and on a Citus
# coordinator with two workers on this machine.
#
#   bench/citus.sh [--rows N] [--requests K] [--shards S]
#
# Builds the extension and takes Citus from tools/citus.sh's cache (built
# there if missing), starts four private throwaway clusters (tools/lib.sh):
# one node, and a coordinator with two workers; loads N calls (default
# 2,000,000; 1 in 2,000 of them a requested number) into a plain table on
# the one node and a hash-distributed table of S shards (default 8) on the
# cluster, files K requests (default 100) on both, and measures:
#
#   1. preview() of one request: one pass over the table (one node: the
#      engine's scan; the cluster: the grouped count on every shard);
#   2. run() of the K requests, wall time, and the rows it rewrote (equal
#      on both sides, or the benchmark fails);
#   3. the per-shard scan rate: each shard's part of the run's counting
#      pass, from the workers' log (log_min_duration_statement = 0), as
#      rows a second.
#
# Prints a table in the format of bench/RESULTS.md; the figures go there
# by hand, with the machine's description.
set -euo pipefail
. "$(dirname "$0")/../tools/lib.sh"
. "$(dirname "$0")/../tools/citus.sh"

rows=2000000
k=100
shards=8
while [ $# -gt 0 ]; do
	case $1 in
		--rows) rows=$2; shift 2 ;;
		--requests) k=$2; shift 2 ;;
		--shards) shards=$2; shift 2 ;;
		*) echo "usage: bench/citus.sh [--rows N] [--requests K] [--shards S]" >&2; exit 2 ;;
	esac
done

ensure_deps
ensure_citus
[ "$CITUS_STATE" = unavailable ] && { echo "skipped: Citus not available"; exit 0; }
work=$(mktemp -d /tmp/anonymize-bench-citus.XXXXXX)
chmod 755 "$work"
dirs=()
cleanup() {
	for d in "${dirs[@]}"; do stop_cluster "$d"; done
	rm -rf "$work"
}
trap cleanup EXIT
stage_tree "$work/src"
private_pg "$work/pg"
citus_install "$work/pg"
build_install "$work/src"

conf=("shared_buffers = 512MB" "max_prepared_transactions = 20" "max_connections = 60"
	"anonymize.country_code = '47'" "anonymize.enabled = off"
	"anonymize.max_rows_per_request = 0" "timezone = 'Europe/Oslo'")
citus_conf=("shared_preload_libraries = 'citus,anonymize'" "citus.shard_count = $shards")

# node NAME [lines...]: start a cluster; prints its port
node() {
	local name=$1 port
	shift
	port=$(free_port)
	dirs+=("$work/$name")
	start_cluster "$work/$name" "$port" "${conf[@]}" "$@" >&2
	echo "$port"
}
# sql PORT NAME STATEMENTS: run as the cluster user, quietly
sql() { as_pg psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$work/$2" -p "$1" -d postgres -c "$3"; }
# ms PORT NAME STATEMENT: its wall time in milliseconds
ms() {
	local t0 t1
	t0=$(date +%s%N)
	sql "$1" "$2" "$3" >/dev/null
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}

p_one=$(node one)
p_co=$(node coord "${citus_conf[@]}")
p_w1=$(node worker1 "${citus_conf[@]}" "log_min_duration_statement = 0")
p_w2=$(node worker2 "${citus_conf[@]}" "log_min_duration_statement = 0")
for n in "$p_co coord" "$p_w1 worker1" "$p_w2 worker2"; do
	set -- $n
	sql "$1" "$2" "CREATE EXTENSION citus"
done
sql "$p_co" coord "SELECT citus_set_coordinator_host('127.0.0.1', $p_co)" >/dev/null
sql "$p_co" coord "SELECT citus_add_node('127.0.0.1', $p_w1); SELECT citus_add_node('127.0.0.1', $p_w2)" >/dev/null

schema="CREATE EXTENSION anonymize;
CREATE TABLE calls (id bigint, caller text, queue text, started timestamptz);"
load="INSERT INTO calls
SELECT g, CASE WHEN g % 2000 = 0 THEN '9' || lpad(((g / 2000) % $k)::text, 7, '0')
               ELSE '+47' || (10000000 + (g::bigint * 7919) % 89999999)::text END,
       'q' || g % 50, '2024-01-01'::timestamptz + g * interval '10 s'
FROM generate_series(1, $rows) g;"
requests="SELECT anonymize.add_target('calls', 'caller', 'phone', 'archive', 'started');
INSERT INTO anonymize.anonymize_request (phone, to_date)
SELECT '9' || lpad(i::text, 7, '0'), current_date FROM generate_series(0, $k - 1) i;"

log "loading $rows calls on one node"
sql "$p_one" one "$schema $load"
log "loading $rows calls into $shards shards on two workers"
sql "$p_co" coord "$schema SELECT create_distributed_table('calls', 'id');" >/dev/null
sql "$p_co" coord "$load"
sql "$p_co" coord "VACUUM ANALYZE calls"
sql "$p_one" one "VACUUM ANALYZE calls"
sql "$p_one" one "$requests" >/dev/null
sql "$p_co" coord "$requests" >/dev/null

prev_one=$(ms "$p_one" one "SELECT * FROM anonymize.preview(1)")
prev_co=$(ms "$p_co" coord "SELECT * FROM anonymize.preview(1)")
# the workers' log from here on: the run's statements only
for w in worker1 worker2; do : >"$work/$w/server.log.mark"; wc -c <"$work/$w/server.log" >"$work/$w/server.log.mark"; done
run_one=$(ms "$p_one" one "SELECT anonymize.run()")
run_co=$(ms "$p_co" coord "SELECT anonymize.run()")
n_one=$(sql "$p_one" one "SELECT sum(rows_anonymized) FROM anonymize.anonymize_request")
n_co=$(sql "$p_co" coord "SELECT sum(rows_anonymized) FROM anonymize.anonymize_request")
[ "$n_one" = "$n_co" ] || { echo "rows differ: one node $n_one, cluster $n_co" >&2; exit 1; }

# each shard's part of the counting pass (the grouped SELECT of _citus_match)
shard_ms=$(for w in worker1 worker2; do
	tail -c +"$(($(cat "$work/$w/server.log.mark") + 1))" "$work/$w/server.log"
done | grep -a '_citus_match' | grep -a 'GROUP BY' | grep -a -v 'm\[1\]' |
	sed -n 's/.*duration: \([0-9.]*\) ms.*/\1/p')
nshard=$(echo "$shard_ms" | grep -c . || true)
per_shard_rows=$((rows / shards))
med=$(echo "$shard_ms" | sort -n | awk '{ a[NR] = $1 } END { if (NR) printf "%.0f", a[int((NR + 1) / 2)] }')
rate=$(awk -v r="$per_shard_rows" -v m="$med" 'BEGIN { if (m > 0) printf "%.0f", r / (m / 1000) }')

cat <<EOF

## Citus: one node against a coordinator and two workers (bench/citus.sh)

$rows calls, $k requests ($n_one rows rewritten on each side), $shards shards,
$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg).

| measure | one node | Citus, 2 workers |
|---|---|---|
| preview() of one request (one pass) | $prev_one ms | $prev_co ms |
| run() of $k requests | $run_one ms | $run_co ms |
| per-shard counting pass ($nshard shard tasks, median) | | $med ms for $per_shard_rows rows: $rate rows/s a shard |
EOF
