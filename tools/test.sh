#!/usr/bin/env bash
# tools/test.sh: run every test of anonymize on this machine, on each
# supported PostgreSQL: 15 (the machine's own), 17 and 18 (Debian's
# packages, each in a Debian root made once with debootstrap and kept under
# ${ANONYMIZE_CACHE:-/var/cache/anonymize}/roots; see tools/lib.sh).
#
#   tools/test.sh              everything, then a summary per version
#   tools/test.sh --pg 17      the suites on PostgreSQL 17 only
#   tools/test.sh --pg 15,18   the suites on 15 and 18 only
#
# For each version: installs what is missing, builds with -Werror, installs
# the extension into a private copy of that PostgreSQL (tools/lib.sh), and
# runs the pg_regress, isolation and TAP suites (make installcheck, which
# makes its own temporary instances with the settings of test.conf).
# On 15 the TAP suite includes the Citus tests (t/100_citus.pl), with
# Citus 13.2.2 built once from ../shared/vendor by tools/citus.sh and
# cached; the summary says whether that build was cached or made.
# 17 and 18 run inside their root (chroot), on a copy of the tree staged
# there, as the root's postgres user.  Once, on the machine itself and only
# in a full run: the libFuzzer harnesses of the pure core for FUZZ_SECONDS
# (default 60), the differential test against libphonenumber (fuzz/), a
# dump of a 15 database restored into 17 and 18 (tools/upgrade_test.sh),
# and the benchmark at a tiny size.  Exits non-zero on any failure.  Safe
# to run again; the machine's own server is left as it was.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/citus.sh"

ALL_VERSIONS=(15 17 18)

usage() {
	echo "usage: tools/test.sh [--pg VERSION[,VERSION...]]   (versions: ${ALL_VERSIONS[*]})" >&2
	exit 2
}

# installcheck [VARIABLE=VALUE...]: make installcheck with the private
# copy (it makes its own temporary instances with the settings of test.conf)
installcheck() {
	as_pg make -C "$work/src" PG_CONFIG="$SYS_PG_CONFIG" bindir="$PG_BIN" installcheck "$@"
}

# suite_here VERSION: the whole suite on PostgreSQL VERSION installed where
# this runs (the machine, or a Debian root entered with chroot).
suite_here() {
	use_pg "$1"
	local status=0 f
	work=$(mktemp -d /tmp/anonymize-test.XXXXXX)
	chmod 755 "$work"
	stage_tree "$work/src"
	private_pg "$work/pg"
	# Citus (PostgreSQL 15 only): the cached build of tools/citus.sh, if any
	[ "$PG_MAJOR" = 15 ] && citus_install "$work/pg"
	build_install "$work/src"

	# each suite on its own, so that a failure in one does not hide the others
	log "running the pg_regress suite on PostgreSQL $PG_MAJOR"
	installcheck ISOLATION= TAP_TESTS= || status=1
	log "running the isolation suite on PostgreSQL $PG_MAJOR"
	installcheck REGRESS= TAP_TESTS= || status=1
	log "running the TAP suite on PostgreSQL $PG_MAJOR"
	installcheck REGRESS= ISOLATION= || status=1

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
		rm -rf "$work"
		log "PostgreSQL $PG_MAJOR: all suites passed"
	else
		log "PostgreSQL $PG_MAJOR: FAILED (work files in $work)"
	fi
	return $status
}

# suite_in_root VERSION: the suite of VERSION in its Debian root, on a copy
# of this tree staged in the root's /tmp.
suite_in_root() {
	local v=$1 dir stage status=0
	dir=$(root_dir "$v")
	trap root_umount EXIT
	root_mount "$dir"
	root_packages "$v" "$dir" || { root_umount; return 1; }
	stage=$(mktemp -d "$dir/tmp/anonymize-src.XXXXXX")
	chmod 755 "$stage"
	stage_tree "$stage/src"
	in_root "$dir" chown -R postgres: "${stage#"$dir"}"
	in_root "$dir" bash "${stage#"$dir"}/src/tools/test.sh" --suite-here "$v" || status=$?
	[ $status -eq 0 ] && rm -rf "$stage"
	root_umount
	return $status
}

# fmt_secs N: N seconds as 4m12s.
fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# phase NAME COMMAND...: run a step in a subshell that stops at its first
# failing command, keep its time and result for the summary (output to the
# terminal and to $logs/NAME.log).
phase() {
	local name=$1 start status
	shift
	start=$(date +%s)
	log "---- $name"
	set +e
	(
		set -e
		"$@"
	) 2>&1 | tee "$logs/${name// /_}.log"
	status=${PIPESTATUS[0]}
	set -e
	result "$name" "$([ "$status" -eq 0 ] && echo passed || echo FAILED)" "$start"
	if [ "$status" -eq 0 ]; then
		npassed=$((npassed + 1))
	else
		failed=1
		nfailed=$((nfailed + 1))
	fi
}

# result NAME WHAT START [END]: a line of the summary (END: now)
result() {
	local end=${4:-$(date +%s)}
	summary+=("$(printf '%-34s %s (%s)' "$1:" "$2" "$(fmt_secs $((end - $3)))")")
}

# the fuzzing and differential checks of the pure core (no server)
host_checks() {
	local work
	work=$(mktemp -d /tmp/anonymize-fuzz.XXXXXX)
	chmod 755 "$work"
	stage_tree "$work/src"
	log "fuzzing the pure core for ${FUZZ_SECONDS:-60} s (fuzz/run.sh)"
	as_pg "$work/src/fuzz/run.sh" "${FUZZ_SECONDS:-60}" || return 1
	log "comparing phone numbers with libphonenumber (fuzz/phonediff)"
	as_pg "$work/src/fuzz/phonediff/run.sh" || return 1
	rm -rf "$work"
}

# the benchmark at a tiny size, to keep it working (no speed asserted)
bench_tiny() { "$TOP/bench/run.sh" --tiny; }

# wait_root VERSION: wait for the root that is being made in the background
# (in this shell: it is this shell's child); false if it could not be made.
wait_root() {
	local v=$1 rc
	[ -n "${root_pid[$v]:-}" ] || return 0
	# its status file, not `wait`: bash may have reaped it already
	while [ ! -s "$logs/root-$v.end" ] && kill -0 "${root_pid[$v]}" 2>/dev/null; do
		sleep 2
	done
	[ -s "$logs/root-$v.end" ] || echo "$(date +%s) 1" >"$logs/root-$v.end"
	if read -r _ rc <"$logs/root-$v.end" && [ "$rc" = 0 ]; then
		result "Debian root for PostgreSQL $v" "made" "${root_start[$v]}" "$(cut -d' ' -f1 "$logs/root-$v.end")"
	else
		result "Debian root for PostgreSQL $v" "FAILED" "${root_start[$v]}" "$(cut -d' ' -f1 "$logs/root-$v.end")"
		log "making the root for PostgreSQL $v failed:"
		cat "$logs/root-$v.log"
		failed=1
		root_pid[$v]=
		return 1
	fi
	root_pid[$v]=
}

# suite VERSION: the suite of VERSION, here or in its root
suite() {
	if [ "$1" = 15 ]; then
		(suite_here 15)
	else
		suite_in_root "$1"
	fi
}

# --- inside a root (or for 15): one version's suite, nothing else
if [ "${1:-}" = --suite-here ]; then
	[ $# -eq 2 ] || usage
	suite_here "$2"
	exit
fi

versions=("${ALL_VERSIONS[@]}")
full=1
while [ $# -gt 0 ]; do
	case $1 in
	--pg)
		[ $# -ge 2 ] || usage
		IFS=, read -r -a versions <<<"$2"
		full=0
		shift 2
		;;
	-h | --help) usage ;;
	*) usage ;;
	esac
done
for v in "${versions[@]}"; do
	[[ " ${ALL_VERSIONS[*]} " == *" $v "* ]] || usage
done

t0=$(date +%s)
logs=$(mktemp -d /tmp/anonymize-test-logs.XXXXXX)
summary=()
failed=0
npassed=0
nfailed=0
declare -A root_pid=() root_start=()
trap 'root_umount' EXIT

# fuzzing (clang, libFuzzer), the differential test (libphonenumber), the CLI on a pty
if [ $full = 1 ]; then
	ensure_deps clang libclang-rt-14-dev g++ libphonenumber-dev libio-pty-perl
else
	ensure_deps libio-pty-perl
fi

# the Debian roots are made (once) in the background, meanwhile the host works
for v in "${versions[@]}"; do
	if [ "$v" != 15 ] && [ -f "$(root_dir "$v")/$ROOT_MARKER" ]; then
		summary+=("$(printf '%-34s %s' "Debian root for PostgreSQL $v:" "cached")")
	elif [ "$v" != 15 ]; then
		log "making the Debian root for PostgreSQL $v in the background ($logs/root-$v.log)"
		root_start[$v]=$(date +%s)
		(
			status=0
			(ensure_root "$v") || status=$?
			echo "$(date +%s) $status" >"$logs/root-$v.end.tmp"
			mv "$logs/root-$v.end.tmp" "$logs/root-$v.end"
		) >"$logs/root-$v.log" 2>&1 &
		root_pid[$v]=$!
	fi
done

[ $full = 1 ] && phase "fuzzing and libphonenumber" host_checks
# Citus for the Citus tests of the PostgreSQL 15 suite: built once, cached
if [[ " ${versions[*]} " == *" 15 "* ]]; then
	citus_start=$(date +%s)
	if ensure_citus; then
		result "Citus $CITUS_VERSION for PostgreSQL 15" "$CITUS_STATE" "$citus_start"
	else
		result "Citus $CITUS_VERSION for PostgreSQL 15" "FAILED" "$citus_start"
		failed=1
		nfailed=$((nfailed + 1))
	fi
fi
for v in "${versions[@]}"; do
	if wait_root "$v"; then
		phase "PostgreSQL $v" suite "$v"
	else
		result "PostgreSQL $v" "FAILED (no Debian root)" "$(date +%s)"
		nfailed=$((nfailed + 1))
	fi
done
if [ $full = 1 ]; then
	phase "dump of 15 restored into 17, 18" "$TOP/tools/upgrade_test.sh"
	phase "benchmark (tiny)" bench_tiny
fi

echo
log "summary (logs in $logs)"
for line in "${summary[@]}"; do echo "  $line"; done
echo "  $(printf '%-34s %s' "total:" "$(fmt_secs $(($(date +%s) - t0)))")"
# the closing line: one a step of the summary
echo "steps: $npassed passed, $nfailed failed"
[ $failed = 0 ] || exit 1
