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
# See bench/README.md. Usage: bench/run.sh [options]   (-h for help)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PY=/usr/bin/python3
HELPER="$BENCH_DIR/bench.py"

MESSAGES=${BENCH_MESSAGES:-20000}
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

usage() {
	cat <<EOF
usage: bench/run.sh [options]

  -n, --messages N     messages in the measured run        (BENCH_MESSAGES, 20000)
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
  -k, --keep           keep the temp dir (configs, logs, mail) (BENCH_KEEP=1)
      --no-install     never apt-get install anything       (BENCH_NO_INSTALL=1)
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
	-k | --keep) KEEP=1; shift ;;
	--no-install) NO_INSTALL=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
done

for v in MESSAGES SESSIONS SIZE WARMUP PROBE TIMEOUT ROUNDS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((MESSAGES > 0 && SESSIONS > 0 && TIMEOUT > 0 && ROUNDS > 0)) ||
	die "messages, sessions, timeout, rounds must be > 0"
((MESSAGES <= 1000000 && SESSIONS <= 1000 && SIZE <= 100000000 && TIMEOUT <= 3600 && ROUNDS <= 20)) ||
	die "refusing absurd sizes (messages<=1e6, sessions<=1000, size<=1e8, timeout<=3600, rounds<=20)"

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
	if ((PROBE > 0)) && ! [[ -x /usr/bin/strace ]] && ((NO_INSTALL == 0)); then
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
	if ((KEEP)); then
		echo "bench: kept $WORK"
	else
		$SUDO rm -rf --one-file-system "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ machine

fs_type=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")
mnt=$(findmnt -n -o SOURCE,OPTIONS -T "$WORK" 2>/dev/null | tr -s ' ' || echo "?")
echo "== machine"
echo "cpus:        $(nproc) ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'))"
echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel:      $(uname -sr)"
echo "temp dir:    $WORK"
echo "filesystem:  $fs_type ($mnt)"
case $fs_type in
tmpfs | ramfs | overlayfs) echo "WARNING: $fs_type: fsync costs nothing here; use --tmpdir on a disk" ;;
esac
echo "postfix:     $(dpkg-query -W -f '${Version}' postfix 2>/dev/null || echo '?') (Debian package)"
if want hikyaku; then
	rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
	echo "hikyaku:     $HIKYAKU (repo $rev, built $(date -r "$HIKYAKU" '+%F %T'))"
fi
echo "load:        smtp-source, $MESSAGES messages x $SIZE bytes, $SESSIONS sessions," \
	"$( ((REUSE)) && echo 'many messages per connection (-d)' || echo 'one message per connection')," \
	"warm-up $WARMUP, $ROUNDS round(s)"
echo "durability:  Postfix fsyncs each queue file before its 250 (built in, not a setting) and"
echo "             virtual(8) fsyncs each Maildir file; hikyaku fsyncs before 250 (DESIGN.md)."
echo "             Both checked below by counting sync calls under strace."
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
	# Debian defaults everywhere except what a private, loopback-only,
	# deliver-everything-to-one-Maildir instance needs. fsync behaviour is
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
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = static:bench.test/user/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
# No local delivery, no relaying: only the virtual transport is in master.cf.
local_transport = error:local delivery disabled
default_transport = error:remote delivery disabled
relay_transport = error:relay disabled
alias_maps =
alias_database =
biff = no
default_process_limit = $plimit
EOF
	# The Debian master.cf minus local, smtp/relay/lmtp, tlsmgr and the pipe
	# transports; smtpd on a loopback high port; chroot column n everywhere.
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
	HK_CONF="$d/hikyaku.yaml"
	cat >"$HK_CONF" <<EOF
# hikyaku config for the bench, written by bench/run.sh
listen:
  - 127.0.0.1:$port
spool_dir: $d/spool
maildir_root: $d/mail
local_domains: [bench.test]
accept_any_user: true
log_level: warn
tls:
  self_signed_dir: $d/tls
EOF
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

# ------------------------------------------------------------------ run

measure() {
	local label=$1 port=$2 newdir=$3 pid=$4 rdir=$5
	local extra=()
	((REUSE)) && extra+=(--reuse)
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

# One MTA, one round: fresh directories, start, measure, stop.
run_one() {
	local m=$1 rdir=$2 port d
	port=$($PY "$HELPER" freeport)
	echo "== round $round/$ROUNDS: $m on 127.0.0.1:$port"
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
echo "== results ($MESSAGES messages, $SESSIONS sessions, $SIZE bytes, $ROUNDS round(s), fs $fs_type)"
if ((${#files[@]})); then
	$PY "$HELPER" report "${files[@]}" || status=1
else
	status=1
fi
exit "$status"
