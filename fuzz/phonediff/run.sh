#!/usr/bin/env bash
# fuzz/phonediff/run.sh [NUMBERS_PER_COUNTRY] [SEED]: build the differential
# test against libphonenumber (Debian's libphonenumber-dev) and run it:
# valid numbers for NO, SE, DK, GB and DE (default 2200 each, 11,000 in
# all), each in 13 written forms, compared with libphonenumber's E.164.
# Fails on any disagreement README.md does not document.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${PHONEDIFF_BUILD:-$top/fuzz/build}
mkdir -p "$build"
gcc -O2 -Wall -Wextra -Werror -I"$top/src" -c "$top/src/anonymize_normalize_core.c" \
	-o "$build/phonediff_core.o"
g++ -std=c++17 -O2 -Wall -Wextra -Werror -I"$top/src" "$here/phonediff.cc" \
	"$build/phonediff_core.o" -lphonenumber -o "$build/phonediff"
"$build/phonediff" "${1:-2200}" "${2:-20261128}"
