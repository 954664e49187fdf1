#!/usr/bin/env bash
# fuzz/run.sh [SECONDS]: build the libFuzzer harnesses of the pure core
# (src/anonymize_*_core.c) with clang -fsanitize=fuzzer,address,undefined
# and run each for its share of SECONDS (default 60), starting from the
# committed seed corpus in fuzz/corpus/NAME.  Fails on any crash, leak,
# sanitizer report or broken property; prints the executions per harness
# and in all.  New inputs go to fuzz/corpus-work/ (not committed), so a
# longer run, e.g. `fuzz/run.sh 3600`, keeps improving on the last one.
#
# Needs clang and libclang-rt-14-dev (tools/test.sh installs them).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
total=${1:-60}
build=${FUZZ_BUILD:-$here/build}
work=${FUZZ_WORK:-$here/corpus-work}
CC=${CC_FUZZ:-clang}
harnesses=(phone email mask)
per=$(( total / ${#harnesses[@]} ))
[ "$per" -ge 1 ] || per=1

mkdir -p "$build" "$work"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
	-Wall -Wextra -Werror -I"$top/src")
# the core also links into the server: build it -Werror with the same care
"$CC" "${flags[@]}" -c "$top/src/anonymize_normalize_core.c" -o "$build/normalize_core.o"
"$CC" "${flags[@]}" -c "$top/src/anonymize_mask_core.c" -o "$build/mask_core.o"

sum=0
for h in "${harnesses[@]}"; do
	"$CC" "${flags[@]}" "$here/fuzz_$h.c" "$build/normalize_core.o" \
		"$build/mask_core.o" -o "$build/fuzz_$h"
	mkdir -p "$work/$h"
	log="$build/fuzz_$h.log"
	# -detect_leaks is on by default with ASan; say it anyway
	if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"$build/fuzz_$h" -max_total_time="$per" -max_len=4096 \
		-timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
		-artifact_prefix="$build/crash-$h-" \
		"$work/$h" "$here/corpus/$h" >"$log" 2>&1; then
		echo "fuzz/run.sh: harness $h FAILED; the end of its log:" >&2
		tail -60 "$log" >&2
		ls "$build"/crash-"$h"-* 2>/dev/null >&2 || true
		exit 1
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
	runs=${runs:-0}
	sum=$((sum + runs))
	echo "fuzz/run.sh: $h: $runs executions in ${per}s, no crash, leak or sanitizer report"
done
echo "fuzz/run.sh: $sum executions in all"
