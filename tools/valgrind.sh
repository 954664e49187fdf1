#!/usr/bin/env bash
# tools/valgrind.sh: run the pg_regress suite with every server process
# under valgrind's memcheck, and fail if valgrind reports an error that
# tools/valgrind.supp does not suppress.
#
# Debian's PostgreSQL is not built with USE_VALGRIND, so memcheck sees
# malloc blocks, not palloc chunks: it catches reads of uninitialized
# memory, reads and writes outside the server's memory (stack, shared
# memory, malloc'd blocks) and bad frees, in the server and in
# anonymize.so (built here with -O0 -g for exact line numbers).  Takes a
# few minutes; not part of tools/test.sh.  Logs stay in the printed work
# directory on failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ensure_deps valgrind
work=$(mktemp -d /tmp/anonymize-valgrind.XXXXXX)
chmod 755 "$work"
port=$(free_port)
cluster=$work/cluster
trap 'stop_cluster "$cluster"' EXIT

stage_tree "$work/src"
private_pg "$work/pg"
log "building in $work/src (-O0 -g)"
as_pg make -s -C "$work/src" PG_CONFIG="$SYS_PG_CONFIG" COPT="-O0 -g" >/dev/null
as_pg make -s -C "$work/src" PG_CONFIG="$SYS_PG_CONFIG" DESTDIR="$PG_ROOT" install >/dev/null
cp "$TOP/tools/valgrind.supp" "$work/valgrind.supp"
mkdir -p "$work/vg"
chown -R "$(cluster_user)": "$work/vg" "$work/valgrind.supp" 2>/dev/null || true

# a cluster as tools/test.sh makes it, started with postgres under valgrind
mkdir -p "$cluster"
chown "$(cluster_user)": "$cluster" 2>/dev/null || true
as_pg initdb -D "$cluster/data" -A trust -U postgres --no-sync -E UTF8 --locale=C >/dev/null
{
	echo "port = $port"
	echo "listen_addresses = '127.0.0.1'"
	echo "unix_socket_directories = '$cluster'"
	echo "fsync = off"
	echo "shared_preload_libraries = 'anonymize'"
	echo "max_worker_processes = 16"
	echo "autovacuum = off"
	echo "anonymize.country_code = '47'"
	echo "timezone = 'Europe/Oslo'"
	echo "anonymize.enabled = off"
} | as_pg tee -a "$cluster/data/postgresql.conf" >/dev/null

log "starting postgres under valgrind (slow)"
as_pg valgrind --quiet --trace-children=yes --track-origins=yes \
	--read-var-info=no --num-callers=30 --error-limit=no \
	--suppressions="$work/valgrind.supp" --gen-suppressions=all \
	--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \
	--log-file="$work/vg/%p.log" \
	"$PG_BIN/postgres" -D "$cluster/data" >"$cluster/server.log" 2>&1 &
export PGHOST=$cluster PGPORT=$port PGUSER=postgres
for _ in $(seq 1 300); do
	as_pg "$PG_BIN/pg_isready" -q && break
	sleep 1
done
as_pg "$PG_BIN/pg_isready" -q || { log "server did not start"; tail "$cluster/server.log"; exit 1; }

log "running the pg_regress suite"
status=0
as_pg make -C "$work/src" PG_CONFIG="$SYS_PG_CONFIG" bindir="$PG_BIN" installcheck \
	EXISTING_SERVER=1 ISOLATION= TAP_TESTS= PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres || status=$?
[ -s "$work/src/regression.diffs" ] && head -100 "$work/src/regression.diffs"
stop_cluster "$cluster"
sleep 2

errors=$(cat "$work"/vg/*.log | grep -c '^==[0-9]*== VALGRINDERROR-BEGIN' || true)
procs=$(ls "$work"/vg/*.log | wc -l)
log "valgrind: $procs processes traced, $errors unsuppressed errors"
if [ "$errors" -ne 0 ]; then
	for f in "$work"/vg/*.log; do
		grep -q VALGRINDERROR-BEGIN "$f" && { log "$f"; head -120 "$f"; }
	done
	status=1
fi
if [ $status -eq 0 ]; then
	rm -rf "$work"
	echo "anonymize: regression suite clean under valgrind ($procs processes)"
else
	log "FAILED (work files in $work)"
	exit 1
fi
