#!/usr/bin/env bash
# bench/run.sh - throughput of hikyaku and Postfix side by side, same machine,
# same run, same load: Postfix's smtp-source sends N messages over S parallel
# sessions to each MTA in turn; we report messages/second accepted (N over
# the wall time of smtp-source) and delivered (N over the time from the start
# until N files are in the Maildir's new/), and the ratios hikyaku/postfix.
#
# Everything listens on and talks to 127.0.0.1 only. Both MTAs run from a
# private temp dir; the Postfix instance is a private one (its own
# config_directory, queue and data directory), the system's default Postfix
# instance is never used or changed. Every wait is bounded; everything this
# script starts is stopped by PID (or by `postfix -c DIR stop`) on exit.
#
# With --tls, the load is STARTTLS instead (bench/tlsload.c, since
# smtp-source has no TLS): full handshakes per session, one message per
# session, many messages per session, and memory per idle TLS connection.
#
# With --relay, each MTA relays instead of delivering locally: smtp-source ->
# MTA -> Postfix's smtp-sink (a fresh one per MTA, same options), and the
# end-to-end rate is N over the time until the sink has received N messages.
#
# See bench/README.md. Usage: bench/run.sh [options]   (-h for help)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PY=/usr/bin/python3
HELPER="$BENCH_DIR/bench.py"

MESSAGES=${BENCH_MESSAGES:-} # 20000, or 5000 with --tls, 10000 with --relay
SESSIONS=${BENCH_SESSIONS:-20}
SIZE=${BENCH_SIZE:-4096}
WARMUP=${BENCH_WARMUP:-500}
PROBE=${BENCH_FSYNC_PROBE:-20}
ROUNDS=${BENCH_ROUNDS:-1}
TIMEOUT=${BENCH_TIMEOUT:-300}
REUSE=${BENCH_REUSE:-0}
ORDER=${BENCH_ORDER:-postfix,hikyaku}
BUILD_DIR=${HK_BUILD_DIR:-build}
HIKYAKU=${HIKYAKU:-}
TMPBASE=${BENCH_TMPDIR:-/var/tmp}
KEEP=${BENCH_KEEP:-0}
NO_INSTALL=${BENCH_NO_INSTALL:-0}
TLS=${BENCH_TLS:-0}
PER_SESSION=${BENCH_PER_SESSION:-250}
IDLE=${BENCH_IDLE:-2000}
IDLE_POSTFIX=${BENCH_IDLE_POSTFIX:-} # default: --idle
RELAY=${BENCH_RELAY:-0}
CONCURRENCY=${BENCH_CONCURRENCY:-20}
LOG_LEVEL=${BENCH_LOG_LEVEL:-info} # hikyaku's default; Postfix logs as it does by default
HK_USER=${BENCH_USER-auto}          # hikyaku's user:; auto = nobody as root, none otherwise
SMTPD_PROCS=${BENCH_SMTPD_PROCESSES:-} # hikyaku's processes.smtpd; empty = not written

usage() {
	cat <<EOF
usage: bench/run.sh [options]

  -n, --messages N     messages in the measured run
                       (BENCH_MESSAGES, 20000; 5000 with --tls; 10000 with --relay)
  -s, --sessions S     parallel SMTP sessions               (BENCH_SESSIONS, 20)
  -l, --size BYTES     message body size                    (BENCH_SIZE, 4096)
  -w, --warmup N       warm-up messages before the run, 0=off (BENCH_WARMUP, 500)
  -p, --probe N        messages sent under strace to count fsync calls, 0=off
                                                            (BENCH_FSYNC_PROBE, 20)
  -r, --rounds R       rounds; each starts fresh instances, the order alternates
                       (A B, B A, ...) and the table shows medians (BENCH_ROUNDS, 1)
  -t, --timeout SEC    bound on one run incl. delivery      (BENCH_TIMEOUT, 300)
  -d, --reuse          several messages per connection (smtp-source -d)
                                                            (BENCH_REUSE=1)
  -o, --order LIST     which MTAs, in order: postfix,hikyaku | hikyaku,postfix |
                       postfix | hikyaku                    (BENCH_ORDER)
  -b, --build-dir DIR  meson build dir holding hikyaku, relative to the repo
                                                            (HK_BUILD_DIR, build)
      --hikyaku PATH   hikyaku binary (overrides --build-dir) (HIKYAKU)
      --tmpdir DIR     where the temp dir goes; must be a real disk for fsync
                       to mean anything (BENCH_TMPDIR, /var/tmp)
  -L, --log-level L    hikyaku's log_level: info (its default, five lines per message,
                       like Postfix's default logging) | warn (nothing per message)
                       | debug | error                          (BENCH_LOG_LEVEL, info)
  -u, --user NAME      hikyaku's user: (the service user it drops to when started as
                       root; the split version refuses root without it); '' = none
                       (BENCH_USER; default nobody as root, none otherwise)
  -P, --smtpd-processes N
                       hikyaku's processes.smtpd (0 = one per CPU); not written to
                       the config when unset (for versions without the setting)
                                                            (BENCH_SMTPD_PROCESSES)
  -k, --keep           keep the temp dir (configs, logs, mail) (BENCH_KEEP=1)
      --no-install     never apt-get install anything       (BENCH_NO_INSTALL=1)

  --tls                STARTTLS load with bench/tlsload (built with gcc -lssl) instead
                       of smtp-source; same certificate (ECDSA P-256, self-signed) for
                       both MTAs. Phases: N sessions without mail, N messages one per
                       session, S sessions x M messages, idle connections. (BENCH_TLS=1)
  -m, --per-session M  --tls: messages per session in the many-messages phase
                                                            (BENCH_PER_SESSION, 250)
      --idle C         --tls: idle TLS connections held open (BENCH_IDLE, 2000)
      --idle-postfix C --tls: the same for Postfix, one smtpd process each
                                                            (BENCH_IDLE_POSTFIX, = --idle)

  --relay              relay instead of local delivery: smtp-source -> MTA -> smtp-sink
                       (a fresh Postfix smtp-sink per MTA on a free loopback port); reports
                       accepted and relayed (end-to-end) msg/s, MTA and sink CPU per
                       message, sink connections per message              (BENCH_RELAY=1)
  -c, --concurrency C  --relay: connections per destination for both MTAs (hikyaku
                       delivery.destination_concurrency, Postfix
                       default_destination_concurrency_limit)   (BENCH_CONCURRENCY, 20)
EOF
}

die() {
	echo "bench: $*" >&2
	exit 1
}

while [[ $# -gt 0 ]]; do
	case $1 in
	-n | --messages) MESSAGES=${2:?}; shift 2 ;;
	-s | --sessions) SESSIONS=${2:?}; shift 2 ;;
	-l | --size) SIZE=${2:?}; shift 2 ;;
	-w | --warmup) WARMUP=${2:?}; shift 2 ;;
	-p | --probe) PROBE=${2:?}; shift 2 ;;
	-t | --timeout) TIMEOUT=${2:?}; shift 2 ;;
	-r | --rounds) ROUNDS=${2:?}; shift 2 ;;
	-d | --reuse) REUSE=1; shift ;;
	-o | --order) ORDER=${2:?}; shift 2 ;;
	-b | --build-dir) BUILD_DIR=${2:?}; shift 2 ;;
	--hikyaku) HIKYAKU=${2:?}; shift 2 ;;
	--tmpdir) TMPBASE=${2:?}; shift 2 ;;
	-L | --log-level) LOG_LEVEL=${2:?}; shift 2 ;;
	-u | --user) HK_USER=${2?}; shift 2 ;;
	-P | --smtpd-processes) SMTPD_PROCS=${2:?}; shift 2 ;;
	-k | --keep) KEEP=1; shift ;;
	--no-install) NO_INSTALL=1; shift ;;
	--tls) TLS=1; shift ;;
	-m | --per-session) PER_SESSION=${2:?}; shift 2 ;;
	--idle) IDLE=${2:?}; shift 2 ;;
	--idle-postfix) IDLE_POSTFIX=${2:?}; shift 2 ;;
	--relay) RELAY=1; shift ;;
	-c | --concurrency) CONCURRENCY=${2:?}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

if [[ -z $MESSAGES ]]; then
	if ((TLS)); then
		MESSAGES=5000
	elif ((RELAY)); then
		MESSAGES=10000
	else
		MESSAGES=20000
	fi
fi
((TLS && RELAY)) && die "--tls and --relay are separate modes; pick one"
[[ -n $IDLE_POSTFIX ]] || IDLE_POSTFIX=$IDLE
for v in MESSAGES SESSIONS SIZE WARMUP PROBE TIMEOUT ROUNDS PER_SESSION IDLE IDLE_POSTFIX \
	CONCURRENCY; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((MESSAGES > 0 && SESSIONS > 0 && TIMEOUT > 0 && ROUNDS > 0)) ||
	die "messages, sessions, timeout, rounds must be > 0"
((MESSAGES <= 1000000 && SESSIONS <= 1000 && SIZE <= 100000000 && TIMEOUT <= 3600 && ROUNDS <= 20)) ||
	die "refusing absurd sizes (messages<=1e6, sessions<=1000, size<=1e8, timeout<=3600, rounds<=20)"
((PER_SESSION > 0 && PER_SESSION <= 100000 && IDLE > 0 && IDLE <= 10000 && IDLE_POSTFIX > 0 &&
	IDLE_POSTFIX <= 10000)) || die "--per-session 1..100000, --idle and --idle-postfix 1..10000"
((CONCURRENCY > 0 && CONCURRENCY <= 1000)) || die "--concurrency 1..1000"
[[ $LOG_LEVEL =~ ^(debug|info|warn|error)$ ]] || die "--log-level: debug, info, warn or error"
[[ -z $SMTPD_PROCS || $SMTPD_PROCS =~ ^[0-9]+$ ]] || die "--smtpd-processes: a number"
if [[ $HK_USER == auto ]]; then
	HK_USER=
	[[ $EUID -eq 0 ]] && HK_USER=nobody
fi
[[ -z $HK_USER || $HK_USER =~ ^[a-z_][a-z0-9_-]*$ ]] || die "--user: not a user name: '$HK_USER'"
[[ -z $HK_USER ]] || id -u "$HK_USER" >/dev/null 2>&1 || die "--user: no such user: $HK_USER"

IFS=, read -r -a MTAS <<<"$ORDER"
for m in "${MTAS[@]}"; do
	[[ $m == postfix || $m == hikyaku ]] || die "--order: unknown MTA '$m'"
done
((${#MTAS[@]} >= 1 && ${#MTAS[@]} <= 2)) || die "--order: one or two MTAs"

want() {
	local m
	for m in "${MTAS[@]}"; do [[ $m == "$1" ]] && return 0; done
	return 1
}

SUDO=
if [[ $EUID -ne 0 ]]; then
	command -v sudo >/dev/null || die "need root or sudo (Postfix's master runs as root)"
	SUDO=sudo
fi

# ------------------------------------------------------------------ install

apt_install() {
	local env=(env DEBIAN_FRONTEND=noninteractive)
	$SUDO "${env[@]}" apt-get install -y -q "$@" >/dev/null ||
		{ $SUDO apt-get update -q >/dev/null && $SUDO "${env[@]}" apt-get install -y -q "$@" >/dev/null; }
}

ensure_tools() {
	[[ -x $PY ]] || die "$PY is missing (apt-get install python3)"
	if ! [[ -x /usr/sbin/smtp-source && -x /usr/sbin/postfix ]]; then
		((NO_INSTALL == 0)) || die "postfix is not installed and --no-install was given"
		echo "bench: installing postfix (Debian package, 'No configuration')"
		echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
		apt_install postfix || die "apt-get install postfix failed"
		# With 'No configuration' there is no /etc/postfix/main.cf and the
		# default instance cannot start; if a policy let it start anyway,
		# stop it: this script started it.
		if $SUDO postfix status >/dev/null 2>&1; then
			echo "bench: stopping the default Postfix instance the install started"
			$SUDO postfix stop >/dev/null 2>&1 || true
		fi
	fi
	[[ -x /usr/sbin/smtp-source ]] || die "/usr/sbin/smtp-source missing after install"
	((RELAY == 0)) || [[ -x /usr/sbin/smtp-sink ]] || die "/usr/sbin/smtp-sink missing (postfix)"
	if ((TLS)) && ! { command -v gcc >/dev/null && [[ -f /usr/include/openssl/ssl.h ]]; }; then
		((NO_INSTALL == 0)) || die "--tls needs gcc and libssl-dev, and --no-install was given"
		echo "bench: installing gcc libssl-dev openssl (tlsload)"
		apt_install gcc libc6-dev libssl-dev openssl || die "apt-get install gcc libssl-dev failed"
	fi
	if ((TLS == 0 && PROBE > 0)) && ! [[ -x /usr/bin/strace ]] && ((NO_INSTALL == 0)); then
		echo "bench: installing strace (fsync check)"
		apt_install strace || echo "bench: strace install failed; fsync check skipped" >&2
	fi
}

ensure_tools

if want hikyaku; then
	if [[ -z $HIKYAKU ]]; then
		[[ $BUILD_DIR == /* ]] || BUILD_DIR="$REPO/$BUILD_DIR"
		HIKYAKU="$BUILD_DIR/hikyaku"
	fi
	[[ -x $HIKYAKU ]] ||
		die "no hikyaku binary at $HIKYAKU (meson setup build && ninja -C build; or --order postfix)"
fi

# ------------------------------------------------------------------ temp dir, cleanup

mkdir -p "$TMPBASE"
WORK=$(mktemp -d "$TMPBASE/hkbench.XXXXXX")
chmod 755 "$WORK" # Postfix's daemons (postfix, nobody) must traverse it
RESULTS="$WORK/results"
mkdir -p "$RESULTS"

HK_PID=
MEASURE_PID=
SINK_PID=
SINK_PORT=
SINK_OUT=
PF_CFG=
PF_QUEUE=
PF_STARTED=0

# Wait (bounded, in tenths of a second) until PID is gone.
wait_gone() {
	local pid=$1 tenths=$2 i
	for ((i = 0; i < tenths; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

stop_hikyaku() {
	[[ -n $HK_PID ]] || return 0
	if kill -0 "$HK_PID" 2>/dev/null; then
		kill -TERM "$HK_PID" 2>/dev/null || true
		if ! wait_gone "$HK_PID" 150; then
			echo "bench: hikyaku (pid $HK_PID) ignored SIGTERM for 15 s, sending SIGKILL" >&2
			kill -KILL "$HK_PID" 2>/dev/null || true
		fi
	fi
	wait "$HK_PID" 2>/dev/null || true
	HK_PID=
}

postfix_master_pid() {
	$SUDO cat "$PF_QUEUE/pid/master.pid" 2>/dev/null | tr -d ' \n'
}

stop_postfix() {
	((PF_STARTED)) || return 0
	local mpid
	mpid=$(postfix_master_pid || true)
	$SUDO postfix -c "$PF_CFG" stop >/dev/null 2>&1 || true
	if [[ -n $mpid ]] && ! wait_gone "$mpid" 150; then
		echo "bench: Postfix master (pid $mpid) still up, 'postfix -c $PF_CFG abort'" >&2
		$SUDO postfix -c "$PF_CFG" abort >/dev/null 2>&1 || true
		wait_gone "$mpid" 50 || true
	fi
	PF_STARTED=0
}

# --relay: the smtp-sink of the current MTA run.
stop_sink() {
	[[ -n $SINK_PID ]] || return 0
	if kill -0 "$SINK_PID" 2>/dev/null; then
		kill -TERM "$SINK_PID" 2>/dev/null || true
		if ! wait_gone "$SINK_PID" 50; then
			kill -KILL "$SINK_PID" 2>/dev/null || true
		fi
	fi
	wait "$SINK_PID" 2>/dev/null || true
	SINK_PID=
}

# shellcheck disable=SC2317  # reached through the trap
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [[ -n $MEASURE_PID ]]; then
		# bench.py stops its smtp-source and strace children on TERM.
		kill -TERM "$MEASURE_PID" 2>/dev/null
		wait_gone "$MEASURE_PID" 100 || kill -KILL "$MEASURE_PID" 2>/dev/null
		wait "$MEASURE_PID" 2>/dev/null
	fi
	stop_hikyaku
	stop_postfix
	stop_sink
	if ((KEEP)); then
		echo "bench: kept $WORK"
	else
		$SUDO rm -rf --one-file-system "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ TLS material

TLSLOAD=
TLS_CERT=
TLS_KEY=
if ((TLS)); then
	# Idle connections: one socket each in the client and the MTA (and one
	# smtpd process each in Postfix); children inherit this limit.
	ulimit -n 8192 || die "cannot raise RLIMIT_NOFILE to 8192 (ulimit -Hn is $(ulimit -Hn))"
	TLSLOAD="$WORK/tlsload"
	gcc -O2 -Wall -Wextra -o "$TLSLOAD" "$BENCH_DIR/tlsload.c" -lssl -lcrypto -lpthread ||
		die "building bench/tlsload.c failed"
	# One ECDSA P-256 self-signed certificate for both MTAs. The key is read
	# as root by hikyaku (before it drops to user:; the split version's master
	# hands it to its keys process) and by Postfix's smtpd before it drops
	# privileges, so root-only is fine.
	mkdir -p "$WORK/tls"
	TLS_CERT="$WORK/tls/cert.pem"
	TLS_KEY="$WORK/tls/key.pem"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
		-keyout "$TLS_KEY" -out "$TLS_CERT" -days 7 -subj /CN=bench.local \
		-addext subjectAltName=DNS:bench.local >/dev/null 2>&1 ||
		die "openssl req (certificate) failed"
	chmod 600 "$TLS_KEY"
fi

# ------------------------------------------------------------------ machine

fs_type=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")
mnt=$(findmnt -n -o SOURCE,OPTIONS -T "$WORK" 2>/dev/null | tr -s ' ' || echo "?")
echo "== machine"
echo "cpus:        $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel:      $(uname -sr)"
echo "temp dir:    $WORK"
echo "filesystem:  $fs_type ($mnt)"
echo "logging:     hikyaku log_level: $LOG_LEVEL (to a file, like Postfix's maillog_file)"
case $fs_type in
tmpfs | ramfs | overlayfs) echo "WARNING: $fs_type: fsync costs nothing here; use --tmpdir on a disk" ;;
esac
echo "postfix:     $(dpkg-query -W -f '${Version}' postfix 2>/dev/null || echo '?') (Debian package)"
if want hikyaku; then
	rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
	echo "hikyaku:     $HIKYAKU ($("$HIKYAKU" version 2>/dev/null | head -n 1), built" \
		"$(date -r "$HIKYAKU" '+%F %T'); bench from repo $rev)"
	echo "             user: ${HK_USER:-(none: runs as $(id -un))}, processes.smtpd:" \
		"${SMTPD_PROCS:-(not set: the default of the binary)}"
	[[ -z ${BENCH_HK_CONF:-} ]] || echo "             config added from $BENCH_HK_CONF:" \
		"$(tr '\n' ' ' <"$BENCH_HK_CONF")"
fi
if ((TLS)); then
	echo "load:        bench/tlsload (STARTTLS, full handshakes, no resumption), $SIZE-byte messages," \
		"$SESSIONS sessions; $MESSAGES sessions without mail; $MESSAGES messages one per" \
		"session; $SESSIONS x $PER_SESSION messages; idle: $IDLE hikyaku," \
		"$IDLE_POSTFIX Postfix; warm-up $WARMUP, $ROUNDS round(s)"
	echo "certificate: $(openssl x509 -in "$TLS_CERT" -noout -text | grep -m1 'Public Key Algorithm' |
		sed 's/^ *//'), $(openssl x509 -in "$TLS_CERT" -noout -text | grep -m1 'NIST CURVE' |
		sed 's/^ *//'), self-signed, the same for both"
	echo "client:      $(openssl version); RLIMIT_NOFILE $(ulimit -n)"
elif ((RELAY)); then
	echo "load:        smtp-source -> MTA -> smtp-sink (relay), $MESSAGES messages x $SIZE bytes," \
		"$SESSIONS sessions," \
		"$( ((REUSE)) && echo 'many messages per connection (-d)' || echo 'one message per connection')" \
		"into the MTA, $CONCURRENCY connections per destination out of it," \
		"warm-up $WARMUP, $ROUNDS round(s)"
	echo "sink:        /usr/sbin/smtp-sink -c (a fresh one per MTA run, 127.0.0.1, counts messages);" \
		"no TLS either side"
else
	echo "load:        smtp-source, $MESSAGES messages x $SIZE bytes, $SESSIONS sessions," \
		"$( ((REUSE)) && echo 'many messages per connection (-d)' || echo 'one message per connection')," \
		"warm-up $WARMUP, $ROUNDS round(s)"
fi
if ((RELAY)); then
	echo "durability:  Postfix fsyncs each queue file before its 250 (built in, not a setting);"
	echo "             hikyaku fsyncs its spool files before 250 (DESIGN.md). The sink writes nothing."
else
	echo "durability:  Postfix fsyncs each queue file before its 250 (built in, not a setting) and"
	echo "             virtual(8) fsyncs each Maildir file; hikyaku fsyncs before 250 (DESIGN.md)."
fi
if ((TLS)); then
	echo "             (--tls has no strace probe; bench/run.sh without --tls checks it.)"
else
	echo "             Both checked below by counting sync calls under strace."
fi
echo

# ------------------------------------------------------------------ Postfix

setup_postfix() {
	local port=$1 d=$2
	PF_CFG="$d/cfg"
	PF_QUEUE="$d/queue"
	local uid gid
	uid=$(id -u nobody)
	gid=$(id -g nobody)
	$SUDO mkdir -p "$PF_CFG" "$PF_QUEUE" "$d/data" "$d/mail"
	$SUDO chown postfix "$d/data"
	$SUDO chown "$uid:$gid" "$d/mail"
	local plimit=100
	((SESSIONS + 10 > plimit)) && plimit=$((SESSIONS + 10))
	# --tls idle phase: one smtpd per connection.
	((TLS && IDLE_POSTFIX + 50 > plimit)) && plimit=$((IDLE_POSTFIX + 50))
	# Debian defaults everywhere except what a private, loopback-only,
	# deliver-everything-to-one-Maildir (or, with --relay, relay-everything-
	# to-the-sink) instance needs. fsync behaviour is
	# Postfix's default (queue files are always fsynced).
	$SUDO tee "$PF_CFG/main.cf" >/dev/null <<EOF
# main.cf for the bench instance, written by bench/run.sh
compatibility_level = 3.6
myhostname = bench.local
mydomain = bench.local
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
queue_directory = $PF_QUEUE
data_directory = $d/data
maillog_file = $d/postfix.log
maillog_file_prefixes = $WORK
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit
alias_maps =
alias_database =
biff = no
default_process_limit = $plimit
EOF
	if ((RELAY)); then
		# --relay: all mail goes to the sink as the relayhost (numeric, in
		# brackets: no DNS), no TLS, no local delivery. The concurrency limit
		# is the same as hikyaku's; Postfix's slow start
		# (initial_destination_concurrency) and connection cache
		# (smtp_connection_cache_on_demand) stay at their defaults.
		$SUDO tee -a "$PF_CFG/main.cf" >/dev/null <<EOF
relayhost = [127.0.0.1]:$SINK_PORT
local_transport = error:local delivery disabled
default_transport = smtp
relay_transport = relay
smtp_tls_security_level = none
default_destination_concurrency_limit = $CONCURRENCY
EOF
	else
		$SUDO tee -a "$PF_CFG/main.cf" >/dev/null <<EOF
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = static:bench.test/user/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
# No local delivery, no relaying: only the virtual transport is in master.cf.
local_transport = error:local delivery disabled
default_transport = error:remote delivery disabled
relay_transport = error:relay disabled
EOF
	fi
	if ((TLS)); then
		$SUDO tee -a "$PF_CFG/main.cf" >/dev/null <<EOF
# --tls: STARTTLS offered (RFC 3207), the bench certificate. No server-side
# session cache (TLS 1.3 clients resume with tickets, whose keys tlsmgr
# keeps; the bench never resumes). Server cipher preference, as hikyaku.
smtpd_tls_security_level = may
smtpd_tls_cert_file = $TLS_CERT
smtpd_tls_key_file = $TLS_KEY
smtpd_tls_session_cache_database =
smtpd_tls_loglevel = 0
tls_preempt_cipherlist = yes
# Idle connections must outlive the idle phase; no per-client connection
# cap (one client address makes all of them).
smtpd_timeout = 600s
smtpd_client_connection_count_limit = 0
EOF
	fi
	# The Debian master.cf minus local, smtp/relay/lmtp, tlsmgr and the pipe
	# transports (smtp and relay come back with --relay); smtpd on a loopback
	# high port; chroot column n everywhere.
	$SUDO tee "$PF_CFG/master.cf" >/dev/null <<EOF
# master.cf for the bench instance, written by bench/run.sh
# service          type  private unpriv chroot wakeup maxproc command
127.0.0.1:$port    inet  n       -      n      -      -       smtpd
pickup             unix  n       -      n      60     1       pickup
cleanup            unix  n       -      n      -      0       cleanup
qmgr               unix  n       -      n      300    1       qmgr
rewrite            unix  -       -      n      -      -       trivial-rewrite
bounce             unix  -       -      n      -      0       bounce
defer              unix  -       -      n      -      0       bounce
trace              unix  -       -      n      -      0       bounce
verify             unix  -       -      n      -      1       verify
flush              unix  n       -      n      1000?  0       flush
proxymap           unix  -       -      n      -      -       proxymap
showq              unix  n       -      n      -      -       showq
error              unix  -       -      n      -      -       error
retry              unix  -       -      n      -      -       error
discard            unix  -       -      n      -      -       discard
virtual            unix  -       n      n      -      -       virtual
anvil              unix  -       -      n      -      1       anvil
scache             unix  -       -      n      -      1       scache
postlog            unix-dgram n  -      n      -      1       postlogd
EOF
	if ((TLS)); then
		echo "tlsmgr             unix  -       -      n      1000?  1       tlsmgr" |
			$SUDO tee -a "$PF_CFG/master.cf" >/dev/null
	fi
	if ((RELAY)); then
		$SUDO tee -a "$PF_CFG/master.cf" >/dev/null <<EOF
smtp               unix  -       -      n      -      -       smtp
relay              unix  -       -      n      -      -       smtp
EOF
	fi
}

start_postfix() {
	local port=$1 d=$2
	# As root, `postfix -c DIR` needs no alternate_config_directories entry in
	# the default /etc/postfix/main.cf (postfix(1): "invoked by the
	# super-user"), so the system's configuration is left untouched.
	$SUDO postfix -c "$PF_CFG" start >/dev/null 2>&1 || true
	PF_STARTED=1
	local mpid="" i
	for ((i = 0; i < 100; i++)); do
		mpid=$(postfix_master_pid || true)
		[[ -n $mpid ]] && break
		sleep 0.1
	done
	if [[ -z $mpid ]] || ! $PY "$HELPER" waitport --port "$port" --pid "$mpid" --timeout 30; then
		echo "bench: Postfix did not start; its log:" >&2
		$SUDO tail -n 20 "$d/postfix.log" >&2 2>/dev/null || true
		return 1
	fi
	PF_PID=$mpid
}

# ------------------------------------------------------------------ hikyaku

setup_hikyaku() {
	local port=$1 d=$2
	mkdir -p "$d/spool" "$d/mail"
	# With user:, the service user must reach spool_dir and maildir_root
	# (hikyaku makes those two 0750 and hands them over) through every
	# directory above them, whatever the umask.
	chmod 755 "$WORK" "$(dirname "$d")" "$d" "$d/spool" "$d/mail"
	HK_CONF="$d/hikyaku.yaml"
	cat >"$HK_CONF" <<EOF
# hikyaku config for the bench, written by bench/run.sh
listen:
  - 127.0.0.1:$port
spool_dir: $d/spool
maildir_root: $d/mail
local_domains: [bench.test]
accept_any_user: true
log_level: $LOG_LEVEL
EOF
	# user: the split version (master, queue, auth, keys, smtpd processes)
	# refuses to start as root without it and drops its children to it; the
	# single-process version drops to it after binding. The same for both.
	[[ -z $HK_USER ]] || echo "user: $HK_USER" >>"$HK_CONF"
	if [[ -n $SMTPD_PROCS ]]; then
		printf 'processes:\n  smtpd: %s\n' "$SMTPD_PROCS" >>"$HK_CONF"
	fi
	# BENCH_HK_CONF: a YAML file appended to hikyaku's config, to compare
	# settings (e.g. queue.delivery_threads); recorded in the header.
	if [[ -n ${BENCH_HK_CONF:-} ]]; then
		cat "$BENCH_HK_CONF" >>"$HK_CONF"
	fi
	if ((TLS)); then
		cat >>"$HK_CONF" <<EOF
tls:
  certificates:
    - {cert: $TLS_CERT, key: $TLS_KEY}
limits:
  connections: $((IDLE + SESSIONS + 1000))
  connections_per_ip: $((IDLE + SESSIONS + 1000))
timeouts:
  command: 10m
EOF
		return
	fi
	cat >>"$HK_CONF" <<EOF
tls:
  self_signed_dir: $d/tls
EOF
	if ((RELAY)); then
		# --relay: sink.test goes to the sink without STARTTLS; loopback
		# clients may relay without AUTH; DNS goes to a closed port so that
		# nothing leaves the machine (the route is numeric: no lookup).
		cat >>"$HK_CONF" <<EOF
routes:
  - {domain: sink.test, transport: relay, address: "127.0.0.1:$SINK_PORT", tls: none}
relay:
  trusted_networks: ["127.0.0.0/8"]
dns:
  forwarders: ["127.0.0.1@9"]
delivery:
  destination_concurrency: $CONCURRENCY
EOF
	fi
	if ((SESSIONS > 40)); then
		# Default per-IP cap is 50; all load comes from 127.0.0.1.
		cat >>"$HK_CONF" <<EOF
limits:
  connections_per_ip: $((SESSIONS + 10))
  connections: $((SESSIONS + 1000))
EOF
	fi
}

start_hikyaku() {
	local port=$1 d=$2
	"$HIKYAKU" serve -c "$HK_CONF" >"$d/hikyaku.log" 2>&1 </dev/null &
	HK_PID=$!
	if ! $PY "$HELPER" waitport --port "$port" --pid "$HK_PID" --timeout 30; then
		echo "bench: hikyaku did not start; its log:" >&2
		tail -n 20 "$d/hikyaku.log" >&2 || true
		return 1
	fi
}

# ------------------------------------------------------------------ sink (--relay)

# A fresh smtp-sink on a free loopback port: -c prints its running counters
# ("sess=N quit=N mesg=N", one update per session end, QUIT and ".") to its
# stdout, which bench.py reads to count relayed messages. It is
# single-process and event-driven; its CPU is reported so that one can see
# it is not the bottleneck.
start_sink() {
	local d=$1
	SINK_PORT=$($PY "$HELPER" freeport)
	SINK_OUT="$d/sink.out"
	mkdir -p "$d"
	local user=()
	# As root it insists on dropping privileges (-u).
	[[ $EUID -eq 0 ]] && user=(-u nobody)
	/usr/sbin/smtp-sink -c "${user[@]}" -4 -h sink.test -m 1000 \
		"127.0.0.1:$SINK_PORT" 1000 >"$SINK_OUT" 2>"$d/sink.err" </dev/null &
	SINK_PID=$!
	if ! $PY "$HELPER" waitport --port "$SINK_PORT" --pid "$SINK_PID" --timeout 10; then
		echo "bench: smtp-sink did not start:" >&2
		cat "$d/sink.err" >&2 || true
		return 1
	fi
}

# ------------------------------------------------------------------ run

measure() {
	local label=$1 port=$2 newdir=$3 pid=$4 rdir=$5
	local extra=()
	((REUSE)) && extra+=(--reuse)
	((RELAY)) && extra+=(--sink-out "$SINK_OUT" --sink-pid "$SINK_PID" --to user@sink.test)
	# In the background so that a TERM/INT reaches our trap at once (bash
	# runs traps only between foreground commands); cleanup stops it by PID.
	$PY "$HELPER" measure --label "$label" --port "$port" --maildir-new "$newdir" \
		--mta-pid "$pid" --messages "$MESSAGES" --sessions "$SESSIONS" --size "$SIZE" \
		--warmup "$WARMUP" --probe "$PROBE" --timeout "$TIMEOUT" --log-dir "$rdir/logs" \
		--out "$RESULTS/$label.$round.json" "${extra[@]}" </dev/null &
	MEASURE_PID=$!
	local rc=0
	wait "$MEASURE_PID" || rc=$?
	MEASURE_PID=
	return "$rc"
}

# --tls: one phase set ("load" or "idle") against one running MTA.
measure_tls() {
	local label=$1 port=$2 newdir=$3 pid=$4 rdir=$5 phases=$6 idle=$7
	$PY "$HELPER" tls --phases "$phases" --label "$label" --port "$port" \
		--maildir-new "$newdir" --mta-pid "$pid" --messages "$MESSAGES" \
		--sessions "$SESSIONS" --per-session "$PER_SESSION" --size "$SIZE" \
		--warmup "$WARMUP" --idle "$idle" --timeout "$TIMEOUT" --tlsload "$TLSLOAD" \
		--log-dir "$rdir/logs" --out "$RESULTS/$label.$round.tls-$phases.json" </dev/null &
	MEASURE_PID=$!
	local rc=0
	wait "$MEASURE_PID" || rc=$?
	MEASURE_PID=
	return "$rc"
}

# --tls, one MTA, one round: the load phases on one instance, then the idle
# phase on a fresh one (so Postfix's idle smtpds and hikyaku's freed session
# memory from the load do not make the first idle connections look free).
run_one_tls() {
	local m=$1 rdir=$2 port d phases
	for phases in load idle; do
		port=$($PY "$HELPER" freeport)
		echo "== round $round/$ROUNDS: $m on 127.0.0.1:$port, TLS $phases"
		sync
		case $m in
		postfix)
			d="$rdir/pf-$phases"
			setup_postfix "$port" "$d"
			start_postfix "$port" "$d" || die "postfix failed to start"
			measure_tls postfix "$port" "$d/mail/bench.test/user/new" "$PF_PID" "$rdir" \
				"$phases" "$IDLE_POSTFIX" || status=1
			stop_postfix
			;;
		hikyaku)
			d="$rdir/hk-$phases"
			setup_hikyaku "$port" "$d"
			start_hikyaku "$port" "$d" || die "hikyaku failed to start"
			measure_tls hikyaku "$port" "$d/mail/bench.test/user/Maildir/new" "$HK_PID" \
				"$rdir" "$phases" "$IDLE" || status=1
			if ! kill -0 "$HK_PID" 2>/dev/null; then
				echo "bench: hikyaku died during the run; its log:" >&2
				tail -n 20 "$d/hikyaku.log" >&2 || true
				status=1
			fi
			stop_hikyaku
			;;
		esac
	done
	echo
}

# One MTA, one round: fresh directories, start, measure, stop.
run_one() {
	local m=$1 rdir=$2 port d
	if ((TLS)); then
		run_one_tls "$m" "$rdir"
		return
	fi
	port=$($PY "$HELPER" freeport)
	if ((RELAY)); then
		start_sink "$rdir/sink-$m" || die "smtp-sink failed to start"
		echo "== round $round/$ROUNDS: $m on 127.0.0.1:$port, relaying to smtp-sink on" \
			"127.0.0.1:$SINK_PORT"
	else
		echo "== round $round/$ROUNDS: $m on 127.0.0.1:$port"
	fi
	sync
	case $m in
	postfix)
		d="$rdir/pf"
		setup_postfix "$port" "$d"
		start_postfix "$port" "$d" || die "postfix failed to start"
		measure postfix "$port" "$d/mail/bench.test/user/new" "$PF_PID" "$rdir" || status=1
		stop_postfix
		;;
	hikyaku)
		d="$rdir/hk"
		setup_hikyaku "$port" "$d"
		start_hikyaku "$port" "$d" || die "hikyaku failed to start"
		measure hikyaku "$port" "$d/mail/bench.test/user/Maildir/new" "$HK_PID" "$rdir" ||
			status=1
		if ! kill -0 "$HK_PID" 2>/dev/null; then
			echo "bench: hikyaku died during the run; its log:" >&2
			tail -n 20 "$d/hikyaku.log" >&2 || true
			status=1
		fi
		stop_hikyaku
		;;
	esac
	stop_sink
	echo
}

status=0
for ((round = 1; round <= ROUNDS; round++)); do
	rdir="$WORK/r$round"
	mkdir -p "$rdir"
	if ((round % 2)); then
		order=("${MTAS[@]}")
	else
		order=()
		for ((i = ${#MTAS[@]} - 1; i >= 0; i--)); do order+=("${MTAS[i]}"); done
	fi
	for m in "${order[@]}"; do
		run_one "$m" "$rdir"
	done
done

shopt -s nullglob
files=()
for m in "${MTAS[@]}"; do files+=("$RESULTS/$m".*.json); done
if ((TLS)); then
	echo "== TLS results ($SIZE-byte messages, $SESSIONS sessions, $ROUNDS round(s), fs $fs_type)"
	if ((${#files[@]})); then
		$PY "$HELPER" tlsreport "${files[@]}" || status=1
	else
		status=1
	fi
	exit "$status"
fi
if ((RELAY)); then
	echo "== relay results ($MESSAGES messages, $SESSIONS sessions in, $CONCURRENCY per" \
		"destination out, $SIZE bytes, $ROUNDS round(s), fs $fs_type)"
else
	echo "== results ($MESSAGES messages, $SESSIONS sessions, $SIZE bytes, $ROUNDS round(s), fs $fs_type)"
fi
if ((${#files[@]})); then
	$PY "$HELPER" report "${files[@]}" || status=1
else
	status=1
fi
exit "$status"
