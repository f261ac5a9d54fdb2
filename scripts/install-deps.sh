#!/usr/bin/env bash
# Install the Debian 12 packages hikyaku needs to build (and, with --test, to
# test). Only what is missing is installed. Needs root, or sudo when not root;
# with neither it says which command to run, and fails.
set -euo pipefail

# libc6-dev: gcc only recommends it, and we install without recommends.
# nettle-dev: libunbound.pc requires hogweed and nettle.
# libpsl-dev: the public suffix list for DMARC's organizational domain.
# libhiredis-dev: state.redis (shared rate limits and greylisting).
# zlib1g-dev: DMARC aggregate reports (gzip, CRC-32 of the day files' records).
# libsqlite3-dev: the delivery analytics store (<spool>/stats.db) and the sandbox's
# message index (WAL, FTS5).
BUILD_PKGS=(gcc libc6-dev meson ninja-build pkg-config libevent-dev libssl-dev libfyaml-dev
	libunbound-dev nettle-dev libcrypt-dev libidn2-dev libseccomp-dev libpsl-dev libhiredis-dev
	zlib1g-dev libsqlite3-dev)
# The README's tour.
RUN_PKGS=(swaks curl ca-certificates)
# libnet-ssleay-perl: swaks' STARTTLS. postfix and gnutls-bin: real peers.
TEST_PKGS=(libcmocka-dev python3 python3-pytest python3-aiosmtpd python3-dnslib
	libnet-ssleay-perl gnutls-bin postfix libsasl2-modules
	dovecot-lmtpd iproute2 openssl clang libclang-rt-14-dev
	# the RFC 7208 SPF test suite (rfc7208-tests.yml.gz) and the YAML reader
	# test_spf_suite.py loads it with
	python3-spf python3-yaml
	# test_dkim.py: dkimpy as the DKIM/ARC peer (nacl for its Ed25519), keys read by cryptography
	python3-dkim python3-nacl python3-cryptography
	# tests/integration/test_package.py: build the .deb (debian/;
	# dpkg-buildpackage wants build-essential), lintian it, and install it
	# in a debootstrapped Debian 12 chroot.
	build-essential dpkg-dev debhelper pandoc lintian debootstrap debian-archive-keyring
	# tests/integration/test_redis.py: the Redis that three nodes share
	redis-server
	# tests/integration/test_dmarc_report.py: xmllint --schema on the reports
	libxml2-utils
	# tests/integration/test_milter.py: real milters (rspamd's proxy worker,
	# clamav-milter with clamd on an EICAR-only database; no download)
	rspamd clamav-daemon clamav-milter
	# tests/integration/test_sandbox_ui.py, test_dashboard.py: the sandbox
	# web UI and the analytics dashboard in a real, headless browser driven
	# over WebDriver
	chromium chromium-driver python3-selenium)

want=("${BUILD_PKGS[@]}" "${RUN_PKGS[@]}")
if [ "${1:-}" = "--test" ]; then
	want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
# Exim, a test peer too, cannot be installed beside postfix (both provide
# mail-transport-agent): scripts/fetch-exim.sh extracts it into a cache.
FETCH_EXIM=$(dirname "$0")/fetch-exim.sh
need_exim=0
if [ "${1:-}" = "--test" ] && ! "$FETCH_EXIM" --check; then
	need_exim=1
fi
[ ${#missing[@]} -eq 0 ] && [ $need_exim -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "install-deps: not root and no sudo; as root, run:" >&2
		if [ ${#missing[@]} -gt 0 ]; then
			echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
		fi
		if [ $need_exim -eq 1 ]; then
			echo "  $FETCH_EXIM" >&2
		fi
		echo "install-deps: then run this script again." >&2
		exit 1
	fi
	SUDO=(sudo)
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}"
	# Postfix is a test peer (private instances only): 'No configuration'
	# sets up no system mail, and no system instance is left running.
	if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
		echo "postfix postfix/main_mailer_type select No configuration" |
			"${SUDO[@]}" debconf-set-selections 2>/dev/null || true
	fi
	"${SUDO[@]}" apt-get update -q
	DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
		"${missing[@]}"
	if printf '%s\n' "${missing[@]}" | grep -qx postfix &&
		"${SUDO[@]}" postfix status >/dev/null 2>&1; then
		"${SUDO[@]}" postfix stop >/dev/null 2>&1 || true
	fi
fi
if [ $need_exim -eq 1 ]; then
	"${SUDO[@]}" "$FETCH_EXIM"
fi
