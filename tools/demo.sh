#!/usr/bin/env bash
# tools/demo.sh: the anonymize demo.
#
# Installs what is missing, builds and installs the extension, starts a
# throwaway cluster with a database "archive", and runs tools/demo.sql: the
# page, what normalization and masking do, then a synthetic archive of
# about 100,000 rows, more requests, preview(), run() timed next to one
# sequential scan, the page and the archive before and after, and the
# receipts.  The cluster is removed at the end.  Safe to run again.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ensure_deps
work=$(mktemp -d /tmp/anonymize-demo.XXXXXX)
chmod 755 "$work"
port=$(free_port)
trap 'stop_cluster "$work/cluster"; rm -rf "$work"' EXIT

stage_tree "$work/src"
private_pg "$work/pg"
build_install "$work/src"
log "starting a throwaway cluster on port $port"
start_cluster "$work/cluster" "$port" \
	"anonymize.database = 'archive'" \
	"anonymize.country_code = '47'" \
	"timezone = 'Europe/Oslo'"
as_pg createdb archive
as_pg psql -X -q -v ON_ERROR_STOP=1 -d archive -f "$work/src/tools/demo.sql"
log "demo finished; the throwaway cluster is removed"
