#!/usr/bin/env bash
# Exim as a test peer (tests/integration/exim_helpers.py). Debian's exim4
# packages conflict with postfix, another test peer (both provide
# mail-transport-agent), so they are not installed: this downloads Debian
# 12's exim4-daemon-light and libidn12 (the one library of Exim's that
# nothing else brings in) and extracts them into $HIKYAKU_EXIM_CACHE
# (/var/cache/hikyaku-test/exim), binary at root/usr/sbin/exim4. Needs root
# and the Debian archive; does nothing when the binary is already there.
# --check: exit 0 if it is there, 1 if not; download nothing.
set -euo pipefail
cache=${HIKYAKU_EXIM_CACHE:-/var/cache/hikyaku-test/exim}
debs=(exim4-daemon-light libidn12)
exim=$cache/root/usr/sbin/exim4

if [ -x "$exim" ]; then
	exit 0
fi
[ "${1:-}" = "--check" ] && exit 1

mkdir -p "$cache"
dl=$(mktemp -d "$cache/dl.XXXXXX")
trap 'rm -rf "$dl" "$cache/root.new"' EXIT
# apt-get fetches as _apt, which must be able to write there.
chown _apt "$dl" 2>/dev/null || true
echo "fetch-exim: downloading ${debs[*]} into $cache (extracted, not installed)"
if ! (cd "$dl" && apt-get download -q "${debs[@]}"); then
	echo "fetch-exim: 'apt-get download ${debs[*]}' failed (see above; an" \
		"'apt-get update' or access to the Debian archive may be missing)" >&2
	exit 1
fi
rm -rf "$cache/root.new"
mkdir "$cache/root.new"
for deb in "$dl"/*.deb; do
	dpkg-deb -x "$deb" "$cache/root.new"
done
new=$cache/root.new/usr/sbin/exim4
if ! [ -x "$new" ]; then
	echo "fetch-exim: no usr/sbin/exim4 in ${debs[*]}" >&2
	exit 1
fi
if LD_LIBRARY_PATH=$cache/root.new/usr/lib/x86_64-linux-gnu ldd "$new" | grep "not found" >&2; then
	echo "fetch-exim: the extracted Exim lacks the libraries above (install them or add" \
		"their packages to debs= in $0)" >&2
	exit 1
fi
rm -rf "$cache/root"
mv "$cache/root.new" "$cache/root"
echo "fetch-exim: $exim"
