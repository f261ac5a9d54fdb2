#!/usr/bin/env bash
# Install what is missing, build, and run hikyaku. With no arguments it runs
# the embedded development default (SMTP on 127.0.0.1:2525, mail for any
# user at localhost into ./var/mail, spool in ./var/spool).
# Arguments go to `hikyaku serve`, e.g.: scripts/run.sh -c /etc/hikyaku/hikyaku.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'rc=$?; echo "scripts/run.sh: failed (exit $rc) at: $BASH_COMMAND" >&2' ERR

scripts/install-deps.sh
# A user's build: no -Werror (a newer compiler must not stop it on a new
# warning; CI and development builds keep it), no unit tests (no cmocka).
if [ ! -f build/build.ninja ]; then
	if ! out=$(meson setup build --buildtype=release -Dwerror=false -Dtests=disabled 2>&1); then
		printf '%s\n' "$out" >&2
		false
	fi
fi
ninja -C build hikyaku
trap - ERR
exec build/hikyaku serve "$@"
