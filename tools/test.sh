#!/usr/bin/env bash
# tools/test.sh: run every test of anonymize on this machine.
#
# Installs what is missing (apt-get), builds with -Werror, installs the
# extension into a private copy of PostgreSQL 15 (tools/lib.sh), and runs
# the pg_regress, isolation and TAP suites (make installcheck, which makes
# its own temporary instances with the settings of test.conf).  Before
# that, outside the server: the libFuzzer harnesses of the pure core for
# FUZZ_SECONDS (default 60) and the differential test against
# libphonenumber (fuzz/).  Exits non-zero on any failure.  Safe to run
# again; the machine's own server is left as it was.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# fuzzing (clang, libFuzzer) and the differential test (libphonenumber)
ensure_deps clang libclang-rt-14-dev g++ libphonenumber-dev
work=$(mktemp -d /tmp/anonymize-test.XXXXXX)
chmod 755 "$work"

stage_tree "$work/src"
private_pg "$work/pg"
build_install "$work/src"

log "fuzzing the pure core for ${FUZZ_SECONDS:-60} s (fuzz/run.sh)"
as_pg "$work/src/fuzz/run.sh" "${FUZZ_SECONDS:-60}"
log "comparing phone numbers with libphonenumber (fuzz/phonediff)"
as_pg "$work/src/fuzz/phonediff/run.sh"

log "running pg_regress, isolation and TAP suites"
status=0
as_pg make -C "$work/src" PG_CONFIG="$SYS_PG_CONFIG" bindir="$PG_BIN" installcheck || status=$?

# show what failed
for f in "$work/src/regression.diffs" "$work/src/output_iso/regression.diffs"; do
	[ -s "$f" ] && { log "$f"; head -200 "$f"; }
done
if [ $status -ne 0 ] && [ -d "$work/src/tmp_check/log" ]; then
	for f in "$work/src"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] && { log "$f (tail)"; tail -60 "$f"; }
	done
fi

if [ $status -eq 0 ]; then
	log "all suites passed"
	rm -rf "$work"
	# last: the benchmark at a tiny size, to keep it working (no speed asserted)
	log "running the benchmark at a tiny size (bench/run.sh --tiny)"
	blog=$(mktemp /tmp/anonymize-bench-tiny.XXXXXX)
	if ! "$TOP/bench/run.sh" --tiny >"$blog" 2>&1; then
		tail -40 "$blog"
		log "bench/run.sh --tiny FAILED (log in $blog)"
		exit 1
	fi
	rm -f "$blog"
	echo "anonymize: all test suites passed"
else
	log "FAILED (work files in $work)"
	exit $status
fi
