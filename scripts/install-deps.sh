#!/usr/bin/env bash
# Install the Debian 12 packages hikyaku needs to build and test.
# Only what is missing is installed; uses sudo when not root.
set -euo pipefail

BUILD_PKGS=(gcc meson ninja-build pkg-config libevent-dev libssl-dev libfyaml-dev libunbound-dev
	libcrypt-dev libidn2-dev)
TEST_PKGS=(libcmocka-dev python3 python3-pytest python3-aiosmtpd python3-dnslib swaks curl
	dovecot-lmtpd iproute2 openssl
	clang libclang-rt-14-dev)

want=("${BUILD_PKGS[@]}")
if [ "${1:-}" = "--test" ]; then
	want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	SUDO=(sudo)
fi
echo "installing: ${missing[*]}"
"${SUDO[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
