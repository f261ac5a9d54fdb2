#!/bin/sh
# testssl.sh — audit hikyaku's STARTTLS with testssl.sh (issue 3).
#
# Slow (a minute or two), so it is NOT part of the default test suite; run it
# by hand or in a nightly job:
#
#     HIKYAKU_BIN=build/hikyaku tests/tls/testssl.sh
#
# Installs Debian's testssl.sh package if neither `testssl.sh` nor `testssl`
# (Debian's name for it) is on PATH (needs root for apt-get). Starts hikyaku
# on a free loopback port with STARTTLS and a self-signed certificate, runs
# `testssl --starttls smtp` on protocols, cipher categories, forward secrecy
# and vulnerabilities, and fails if SSLv2, SSLv3, TLS 1.0 or TLS 1.1 is
# offered, if a weak cipher category is offered, or if any vulnerability check
# is flagged (severity LOW or worse). Certificate trust is not judged: the
# certificate is self-signed on purpose. The full testssl output and its JSON
# stay in $TESTSSL_OUT (default: a temp directory, kept on failure).
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${HIKYAKU_BIN:-$REPO/build/hikyaku}
[ -x "$BIN" ] || { echo "testssl.sh: no hikyaku binary at $BIN (set HIKYAKU_BIN)" >&2; exit 2; }

TESTSSL=$(command -v testssl.sh || command -v testssl || true)
if [ -z "$TESTSSL" ]; then
	echo "testssl.sh: installing Debian package testssl.sh" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y testssl.sh >&2
	TESTSSL=$(command -v testssl.sh || command -v testssl)
fi

OUT=${TESTSSL_OUT:-$(mktemp -d /tmp/hk-testssl.XXXXXX)}
mkdir -p "$OUT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$OUT/hikyaku.yaml" <<EOF
hostname: mx.test.example
listen:
  - address: "127.0.0.1:$PORT"
    tls: starttls
spool_dir: "$OUT/spool"
maildir_root: "$OUT/mail"
local_domains: [localhost]
accept_any_user: true
tls:
  self_signed_dir: "$OUT/tls"
EOF

"$BIN" serve -c "$OUT/hikyaku.yaml" > "$OUT/hikyaku.log" 2>&1 &
HK_PID=$!
trap 'kill "$HK_PID" 2>/dev/null || true; wait "$HK_PID" 2>/dev/null || true' EXIT INT TERM
i=0
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.5).close()" 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$HK_PID" 2>/dev/null; then
		echo "testssl.sh: hikyaku did not start:" >&2
		cat "$OUT/hikyaku.log" >&2
		exit 2
	fi
	sleep 0.1
done

echo "testssl.sh: $TESTSSL --starttls smtp 127.0.0.1:$PORT (output in $OUT)"
# -p protocols, -s cipher categories, -f forward secrecy, -U vulnerabilities
rc=0
"$TESTSSL" --quiet --color 0 --warnings batch --starttls smtp --ip one \
	--jsonfile "$OUT/testssl.json" -p -s -f -U "127.0.0.1:$PORT" > "$OUT/testssl.txt" 2>&1 || rc=$?
# testssl's exit status counts findings loosely; the JSON is what we judge.
if [ ! -s "$OUT/testssl.json" ]; then
	echo "testssl.sh: testssl produced no JSON (exit $rc):" >&2
	tail -30 "$OUT/testssl.txt" >&2
	exit 2
fi

status=0
python3 - "$OUT/testssl.json" <<'EOF' || status=$?
import json, sys

findings = json.load(open(sys.argv[1]))
by_id = {f["id"]: f for f in findings}
bad = []

# Protocols: only TLS 1.2 and 1.3 may be offered.
for pid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
    f = by_id.get(pid)
    if f is None:
        bad.append(f"{pid}: not tested")
    elif not f["finding"].startswith("not offered"):
        bad.append(f"{pid}: {f['finding']}")
for pid in ("TLS1_2", "TLS1_3"):
    f = by_id.get(pid, {"finding": "not tested"})
    if not f["finding"].startswith("offered"):
        bad.append(f"{pid}: {f['finding']} (expected offered)")

# Cipher categories: everything below "strong" must be absent.
weak = ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
        "cipherlist_3DES_IDEA", "cipherlist_AVERAGE", "cipherlist_OBSOLETED")
for pid in weak:
    f = by_id.get(pid)
    if f is not None and not f["finding"].startswith("not offered"):
        bad.append(f"{pid}: {f['finding']}")
if not any(i.startswith("cipherlist_") for i in by_id):
    bad.append("no cipher category results")

# Vulnerabilities (-U) and forward secrecy (-f): the run has no certificate
# checks (-S), so any finding of severity LOW or worse (or a WARN, testssl's
# "could not test") fails, whatever its id.
severe = ("LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN")
for f in findings:
    if f["severity"] in severe:
        bad.append(f"{f['id']} [{f['severity']}]: {f['finding']}")
vuln = ("heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
        "CRIME_TLS", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM",
        "BEAST", "LUCKY13", "RC4")
seen = sum(1 for f in findings if f["id"] in vuln)
if seen < 12:
    bad.append(f"only {seen} vulnerability results: did -U run?")
fs = by_id.get("PFS", by_id.get("FS", {"finding": "not tested"}))
if not fs["finding"].startswith("offered"):
    bad.append(f"forward secrecy: {fs['finding']}")

print("testssl summary:")
for pid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"):
    print(f"  {pid:8} {by_id.get(pid, {}).get('finding', '?')}")
for pid in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
            "cipherlist_3DES_IDEA", "cipherlist_OBSOLETED", "cipherlist_AVERAGE",
            "cipherlist_STRONG", "cipherlist_GOOD", "PFS", "FS", "PFS_ECDHE_curves"):
    if pid in by_id:
        print(f"  {pid:22} {by_id[pid]['finding']}")
print(f"  vulnerability checks: {seen}, findings LOW or worse: "
      f"{sum(1 for x in bad if '[' in x)}")
if bad:
    print("FAIL:")
    for b in bad:
        print("  " + b)
    sys.exit(1)
print("PASS")
EOF
[ $status -eq 0 ] && [ -z "${TESTSSL_OUT:-}" ] && rm -rf "$OUT"
exit $status
