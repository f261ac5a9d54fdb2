#!/usr/bin/env bash
# Install what is missing, build, and run hikyaku. With no arguments it runs
# the embedded development default (SMTP on 127.0.0.1:2525, mail for any
# user at localhost into ./var/mail, spool in ./var/spool).
# Arguments go to `hikyaku serve`, e.g.: scripts/run.sh -c /etc/hikyaku/hikyaku.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build --buildtype=release >/dev/null
ninja -C build
exec build/hikyaku serve "$@"
