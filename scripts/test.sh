#!/usr/bin/env bash
# Install what is missing, build with ASan+UBSan, and run every test:
# unit (cmocka, via meson), the fuzz targets over their seed corpora
# (a regression check, not a fuzzing campaign), and the integration suite
# (pytest against the real daemon). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'rc=$?; echo "scripts/test.sh: failed (exit $rc) at: $BASH_COMMAND" >&2' ERR
scripts/install-deps.sh --test

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

echo "== build (ASan+UBSan)"
# meson's output is shown only when it fails (it names what is missing).
setup() {
	local dir=$1 out
	shift
	[ -f "$dir/build.ninja" ] && return 0
	if ! out=$("$@" 2>&1); then
		printf '%s\n' "$out" >&2
		return 1
	fi
}
setup build-asan meson setup build-asan -Dtests=enabled -Db_sanitize=address,undefined \
	-Db_lundef=false
ninja -C build-asan

echo "== unit tests"
meson test -C build-asan --suite unit --print-errorlogs

echo "== fuzz targets over their seed corpora"
CC=clang setup build-fuzz meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined \
	-Db_lundef=false
ninja -C build-fuzz
for t in tests/fuzz/corpus/*/; do
	name=$(basename "$t")
	# bounded: a replay takes well under a second; a hang fails the run
	timeout 600 build-fuzz/tests/fuzz_"$name" -runs=0 "$t" 2>&1 | tail -1
done

echo "== integration tests"
export HIKYAKU_BIN="$PWD/build-asan/hikyaku"
export HIKYAKU_DNS_PROBE="$PWD/build-asan/tests/dns_probe"
export HIKYAKU_DKIM_PROBE="$PWD/build-asan/tests/dkim_probe"
export HIKYAKU_BOUNCE_DUMP="$PWD/build-asan/tests/bounce_dump"
export HIKYAKU_SPF_SUITE="$PWD/build-asan/tests/spf_suite"
# install-deps has provided the peers (Exim): a missing one fails, no skip.
export HIKYAKU_REQUIRE_PEERS=1
/usr/bin/python3 -m pytest -q tests/integration "$@"
