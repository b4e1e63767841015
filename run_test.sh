#!/usr/bin/env bash
# The failover demo (SPEC §6), headless: build, start primary, backup, a subscriber and
# test_publisher, SIGKILL the primary after RUN_SECS, run AFTER_SECS more on the backup, stop
# everything this script started (and only that), then judge the run with `report`.
#
# FAULT picks what happens to the primary after RUN_SECS:
#   kill               SIGKILL it (the default, the demo above).
#   stop               SIGSTOP it, SIGCONT it STOP_SECS later, run AFTER_SECS more, then check
#                      that the resumed broker stepped down (its STATUS says role=backup).
#   kill-restart-kill  SIGKILL it, restart it RESTART_SECS later (it rejoins as backup), wait
#                      REJOIN_SECS, SIGKILL the other broker (primary by then) so the restarted
#                      one takes over, run AFTER_SECS more.
# Every fault moment is handed to `report`, which judges the silence around each one.
#
# Environment overrides (defaults in brackets):
#   BIND [127.0.0.1] (the brokers' --bind: only this machine can reach them; 0.0.0.0 opens
#   them to the network, e.g. to watch from another host)
#   PRIMARY_PORT [8080]  BACKUP_PORT [8081]  TOPIC [topicC]  FAULT [kill]
#   RUN_SECS [30] (before the fault)  AFTER_SECS [10] (after the last fault)  RATE_HZ [10]
#   STOP_SECS [3]  RESTART_SECS [5]  REJOIN_SECS [3]
#   MAX_SILENCE_MS [1000; 2000 for FAULT=stop, where the silent primary is only detected after
#   a ping timeout; 4000 for FAULT=stop with WITNESS=1, where it is replaced once its lease
#   lapses]  LOG_DIR [run-logs/<timestamp>]  RUST_LOG [info]
#   SKIP_BUILD [0] (1: use the release binaries already built, e.g. by a script running many)
#   WITNESS [0] (1: start a witness on WITNESS_PORT [8082] first and give both brokers
#   --witness; a takeover on silence then waits for its grant)
#
# Exit code: 0 PASS, 1 FAIL (the report's verdict, or a stopped primary that did not step
# down); 2 for a bad setting, a busy port or a program that would not start.
set -euo pipefail

BIND="${BIND:-127.0.0.1}"
PRIMARY_PORT="${PRIMARY_PORT:-8080}"
BACKUP_PORT="${BACKUP_PORT:-8081}"
TOPIC="${TOPIC:-topicC}"
RUN_SECS="${RUN_SECS:-30}"
AFTER_SECS="${AFTER_SECS:-10}"
RATE_HZ="${RATE_HZ:-10}"
FAULT="${FAULT:-kill}"
STOP_SECS="${STOP_SECS:-3}"
RESTART_SECS="${RESTART_SECS:-5}"
REJOIN_SECS="${REJOIN_SECS:-3}"
SKIP_BUILD="${SKIP_BUILD:-0}"
WITNESS="${WITNESS:-0}"
WITNESS_PORT="${WITNESS_PORT:-8082}"
if [[ -z "${MAX_SILENCE_MS:-}" ]]; then
	if [[ "$FAULT" != stop ]]; then
		MAX_SILENCE_MS=1000
	elif [[ "$WITNESS" == 1 ]]; then
		MAX_SILENCE_MS=4000 # a silent primary is replaced only once its lease lapses
	else
		MAX_SILENCE_MS=2000
	fi
fi
export RUST_LOG="${RUST_LOG:-info}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$repo"
LOG_DIR="${LOG_DIR:-$repo/run-logs/$(date +%Y%m%d-%H%M%S)}"
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

# How long a program may take to start listening, and to exit once asked to.
START_DEADLINE_SECS=10
STOP_DEADLINE_SECS=5

say() { printf 'run_test.sh: %s\n' "$*"; }
die() {
	local code="$1"
	shift
	printf 'run_test.sh: %s\n' "$*" >&2
	exit "$code"
}

# ---- settings -------------------------------------------------------------------------------

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
case "$FAULT" in
kill | stop | kill-restart-kill) ;;
*) die 2 "FAULT must be kill, stop or kill-restart-kill, got '$FAULT'" ;;
esac
[[ "$SKIP_BUILD" == 0 || "$SKIP_BUILD" == 1 ]] || die 2 "SKIP_BUILD must be 0 or 1, got '$SKIP_BUILD'"
[[ "$WITNESS" == 0 || "$WITNESS" == 1 ]] || die 2 "WITNESS must be 0 or 1, got '$WITNESS'"
for var in PRIMARY_PORT BACKUP_PORT WITNESS_PORT RUN_SECS AFTER_SECS RATE_HZ MAX_SILENCE_MS STOP_SECS RESTART_SECS REJOIN_SECS; do
	is_uint "${!var}" || die 2 "$var must be a non-negative integer, got '${!var}'"
done
for var in PRIMARY_PORT BACKUP_PORT WITNESS_PORT; do
	((10#${!var} >= 1 && 10#${!var} <= 65535)) || die 2 "$var must be a port 1-65535, got '${!var}'"
done
((10#$RATE_HZ > 0)) || die 2 "RATE_HZ must be at least 1"
[[ "$PRIMARY_PORT" != "$BACKUP_PORT" ]] || die 2 "PRIMARY_PORT and BACKUP_PORT must differ (both $PRIMARY_PORT)"
[[ -n "$TOPIC" && "$TOPIC" != *"|"* && "$TOPIC" != *" "* ]] || die 2 "TOPIC must be a non-empty word without '|' or spaces, got '$TOPIC'"
[[ "$BIND" =~ ^[0-9A-Fa-f.:]+$ ]] || die 2 "BIND must be an IP address (127.0.0.1, 0.0.0.0, ::1), got '$BIND'"

# Where the clients reach the brokers: the bound address, or loopback for "every address".
case "$BIND" in
0.0.0.0) host=127.0.0.1 ;;
::) host=::1 ;;
*) host="$BIND" ;;
esac
# host_port PORT: host:port, with brackets around an IPv6 host.
host_port() {
	if [[ "$host" == *:* ]]; then printf '[%s]:%s\n' "$host" "$1"; else printf '%s:%s\n' "$host" "$1"; fi
}

# ---- process bookkeeping --------------------------------------------------------------------

# Pids this script started and has not yet seen exit; the only processes it ever signals.
pids=()

forget() {
	local keep=() p
	for p in ${pids[@]+"${pids[@]}"}; do
		[[ "$p" == "$1" ]] || keep+=("$p")
	done
	pids=(${keep[@]+"${keep[@]}"})
}

# True while the process runs (bash reaps its children itself, so an exited child fails
# `kill -0`; the zombie check is a second safeguard).
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	local state
	state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
	[[ "$state" != "Z" ]]
}

# wait_gone PID SECS: true if PID exits within SECS seconds (its status is then collected).
wait_gone() {
	local pid="$1" deadline=$((SECONDS + $2))
	while alive "$pid"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}

# stop NAME PID: SIGINT (graceful: the programs print summaries and exit), then SIGTERM, then
# SIGKILL, each after a bounded wait.
stop() {
	local name="$1" pid="$2" sig
	for sig in INT TERM KILL; do
		alive "$pid" || break
		[[ "$sig" == INT ]] || say "$name (pid $pid) did not exit, sending SIG$sig"
		kill -"$sig" "$pid" 2>/dev/null || true
		wait_gone "$pid" "$STOP_DEADLINE_SECS" && return 0
	done
	wait_gone "$pid" 1 || say "warning: $name (pid $pid) is still running"
}

# pause SECS: sleeps in a way a trapped INT/TERM interrupts at once (bash runs traps only
# between foreground commands, but does interrupt `wait`).
pause() {
	sleep "$1" &
	local s=$!
	pids+=("$s")
	wait "$s" || true
	forget "$s"
}

# On any exit: whatever this script started and is still running gets SIGTERM, then SIGKILL
# (and SIGCONT first, in case it is the primary FAULT=stop froze: it could not act on TERM).
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
	local p signalled=0
	for p in ${pids[@]+"${pids[@]}"}; do
		if alive "$p"; then
			kill -CONT "$p" 2>/dev/null || true
			kill -TERM "$p" 2>/dev/null || true
			signalled=1
		fi
	done
	((signalled)) || return 0
	sleep 0.5
	for p in ${pids[@]+"${pids[@]}"}; do
		if alive "$p"; then
			say "cleanup: pid $p ignored SIGTERM, sending SIGKILL"
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	return 0
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# ---- ports ----------------------------------------------------------------------------------

# True if something listens on TCP port $1 (any local address).
listening() {
	if command -v ss >/dev/null 2>&1; then
		ss -ltn 2>/dev/null | awk -v p=":$1" '
			{ a = $4; if (substr(a, length(a) - length(p) + 1) == p) found = 1 }
			END { exit !found }'
	else
		(exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
	fi
}

# True if a TCP socket other than a TIME_WAIT one holds local port $1: a listener, or a
# connection that was given it as its ephemeral port. Either way a broker cannot bind it.
port_taken() {
	command -v ss >/dev/null 2>&1 || {
		listening "$1"
		return
	}
	ss -tan 2>/dev/null | awk -v p=":$1" '
		NR > 1 && $1 != "TIME-WAIT" { a = $4; if (substr(a, length(a) - length(p) + 1) == p) found = 1 }
		END { exit !found }'
}

ports=(PRIMARY_PORT BACKUP_PORT)
[[ "$WITNESS" == 0 ]] || ports+=(WITNESS_PORT)
for var in "${ports[@]}"; do
	if port_taken "${!var}"; then
		die 2 "port ${!var} is already in use (set $var=... to use another)"
	fi
done

# wait_listening NAME PID PORT: until PORT listens; fails clearly if NAME dies or is too slow.
wait_listening() {
	local name="$1" pid="$2" port="$3" deadline=$((SECONDS + START_DEADLINE_SECS))
	until listening "$port"; do
		if ! alive "$pid"; then
			tail -n 5 "$LOG_DIR/$name.err" >&2 || true
			die 2 "$name exited before listening on port $port (see $LOG_DIR/$name.err)"
		fi
		((SECONDS < deadline)) || die 2 "$name is not listening on port $port after ${START_DEADLINE_SECS} s (see $LOG_DIR/$name.err)"
		sleep 0.1
	done
}

# ---- build and start ------------------------------------------------------------------------

if ((SKIP_BUILD)); then
	say "not building (SKIP_BUILD=1): using $bin"
else
	say "building (cargo build --release --bins)"
	cargo build --release --bins --quiet
fi
for prog in primary backup subscriber test_publisher report witness; do
	[[ -x "$bin/$prog" ]] || die 2 "$bin/$prog was not built"
done

mkdir -p "$LOG_DIR"
say "logs in $LOG_DIR"

# start_as LOG PROG ARGS...: runs $bin/PROG in the background, output to
# $LOG_DIR/LOG.{out,err}; its pid is left in $started.
start_as() {
	local log="$1" prog="$2"
	shift 2
	"$bin/$prog" "$@" >"$LOG_DIR/$log.out" 2>"$LOG_DIR/$log.err" &
	started=$!
	pids+=("$started")
	say "started $prog pid $started: $prog $*"
}

# start NAME ARGS...: start_as with the program's own name for its logs.
start() { start_as "$1" "$@"; }

primary_addr="$(host_port "$PRIMARY_PORT")"
backup_addr="$(host_port "$BACKUP_PORT")"

# With WITNESS=1 both brokers name the witness, started first.
witness_args=()
if [[ "$WITNESS" == 1 ]]; then
	start witness "$WITNESS_PORT" --bind "$BIND"
	witness_pid=$started
	wait_listening witness "$witness_pid" "$WITNESS_PORT"
	witness_args=(--witness "$(host_port "$WITNESS_PORT")")
fi

start primary "$PRIMARY_PORT" "$backup_addr" --bind "$BIND" ${witness_args[@]+"${witness_args[@]}"}
primary_pid=$started
wait_listening primary "$primary_pid" "$PRIMARY_PORT"

start backup "$BACKUP_PORT" "$primary_addr" --bind "$BIND" ${witness_args[@]+"${witness_args[@]}"}
backup_pid=$started
wait_listening backup "$backup_pid" "$BACKUP_PORT"

start subscriber "$TOPIC" "$primary_addr" "$backup_addr" --timestamps
subscriber_pid=$started
# The subscriber prints nothing until a message arrives, so there is no event to wait on;
# one second is ample for two local connects and SUBSCRIBEs.
sleep 1
alive "$subscriber_pid" || die 2 "subscriber exited at start (see $LOG_DIR/subscriber.err)"

start test_publisher "$TOPIC" "$primary_addr" "$backup_addr" --rate-hz "$RATE_HZ" --timestamps \
	--publish-log "$LOG_DIR/published.log"
publisher_pid=$started

# ---- the run --------------------------------------------------------------------------------

check_running() {
	alive "$2" || say "warning: $1 (pid $2) exited early (see $LOG_DIR/$1.err)"
}

# now_ms: the time in unix ms (whole seconds where `date` cannot do milliseconds).
now_ms() {
	local ms
	ms="$(date +%s%3N)"
	[[ "$ms" =~ ^[0-9]+$ ]] || ms="$(($(date +%s) * 1000))"
	printf '%s\n' "$ms"
}

# sigkill NAME PID [PREFIX]: SIGKILL a broker and collect it; its kill moment (unix ms) is
# appended to $fault_ms. PREFIX (optional) opens the progress line.
fault_ms=()
sigkill() {
	local name="$1" pid="$2" prefix="${3:-}" at
	at="$(now_ms)"
	fault_ms+=("$at")
	if alive "$pid"; then
		say "${prefix}killing $name (pid $pid) with SIGKILL at $at ms"
		kill -KILL "$pid" 2>/dev/null || true
		# SIGKILL cannot be caught, so this wait is short; the redirect keeps bash's "Killed"
		# job notice out of the demo's output.
		wait "$pid" 2>/dev/null || true
		forget "$pid"
	else
		say "warning: $name (pid $pid) had already exited; kill time $at ms"
	fi
}

# broker_status PORT: the broker's one-line answer to STATUS (empty if none within 2 s).
broker_status() {
	local fd line=""
	if exec {fd}<>"/dev/tcp/$host/$1"; then
		printf 'STATUS\n' >&"$fd" || true
		IFS= read -r -t 2 line <&"$fd" || true
		exec {fd}>&-
	fi 2>/dev/null
	printf '%s\n' "${line%$'\r'}"
}

# role_of STATUS_LINE: the value of its role= field (empty if it has none).
role_of() {
	local field fields
	IFS='|' read -r -a fields <<<"$1"
	for field in ${fields[@]+"${fields[@]}"}; do
		[[ "$field" == role=* ]] && printf '%s\n' "${field#role=}" && return 0
	done
	printf '\n'
}

# show_status WHAT PORT: prints the broker's STATUS line; its role is left in $role.
show_status() {
	local line
	line="$(broker_status "$2")"
	role="$(role_of "$line")"
	say "$1 (port $2): ${line:-no answer to STATUS}"
}

# FAULT=stop: the resumed primary's role at the end, judged after the report.
stepped_down=""

say "running $RUN_SECS s before the ${FAULT/kill-restart-kill/first kill}…"
pause "$RUN_SECS"
check_running backup "$backup_pid"
check_running subscriber "$subscriber_pid"
check_running test_publisher "$publisher_pid"

case "$FAULT" in
kill)
	sigkill primary "$primary_pid"
	say "running $AFTER_SECS s more on the backup…"
	pause "$AFTER_SECS"
	;;
stop)
	at="$(now_ms)"
	fault_ms+=("$at")
	alive "$primary_pid" || die 2 "primary (pid $primary_pid) exited early (see $LOG_DIR/primary.err)"
	say "stopping primary (pid $primary_pid) with SIGSTOP at $at ms, for $STOP_SECS s"
	kill -STOP "$primary_pid" || die 2 "cannot SIGSTOP primary (pid $primary_pid)"
	pause "$STOP_SECS"
	say "resuming primary (pid $primary_pid) with SIGCONT; it must find itself replaced and step down"
	kill -CONT "$primary_pid" 2>/dev/null || true
	say "running $AFTER_SECS s more…"
	pause "$AFTER_SECS"
	check_running primary "$primary_pid"
	show_status "resumed primary" "$PRIMARY_PORT"
	stepped_down="$role"
	show_status "backup" "$BACKUP_PORT"
	;;
kill-restart-kill)
	sigkill primary "$primary_pid" "kill 1 of 2: "
	say "restarting it in $RESTART_SECS s…"
	pause "$RESTART_SECS"
	say "restarting the primary (logs primary2.out, primary2.err); it should rejoin as backup"
	start_as primary2 primary "$PRIMARY_PORT" "$backup_addr" --bind "$BIND" ${witness_args[@]+"${witness_args[@]}"}
	restarted_pid=$started
	wait_listening primary2 "$restarted_pid" "$PRIMARY_PORT"
	say "letting it rejoin for $REJOIN_SECS s…"
	pause "$REJOIN_SECS"
	show_status "restarted broker" "$PRIMARY_PORT"
	show_status "backup" "$BACKUP_PORT"
	check_running subscriber "$subscriber_pid"
	check_running test_publisher "$publisher_pid"
	sigkill backup "$backup_pid" "kill 2 of 2, the primary now: "
	say "running $AFTER_SECS s more on the restarted broker…"
	pause "$AFTER_SECS"
	show_status "restarted broker" "$PRIMARY_PORT"
	;;
esac

# ---- stop -----------------------------------------------------------------------------------

say "stopping test_publisher (pid $publisher_pid) with SIGINT"
stop test_publisher "$publisher_pid"
say "letting the subscriber drain…"
pause 1.5
case "$FAULT" in
kill)
	say "stopping subscriber (pid $subscriber_pid) and backup (pid $backup_pid) with SIGINT"
	stop subscriber "$subscriber_pid"
	stop backup "$backup_pid"
	;;
stop)
	# The resumed primary (a backup by now) first, so the primary does not hand over to it.
	say "stopping subscriber (pid $subscriber_pid), the resumed primary (pid $primary_pid) and backup (pid $backup_pid) with SIGINT"
	stop subscriber "$subscriber_pid"
	stop primary "$primary_pid"
	stop backup "$backup_pid"
	;;
kill-restart-kill)
	say "stopping subscriber (pid $subscriber_pid) and the restarted broker (pid $restarted_pid) with SIGINT"
	stop subscriber "$subscriber_pid"
	stop primary2 "$restarted_pid"
	;;
esac

if [[ "$WITNESS" == 1 ]]; then
	say "stopping witness (pid $witness_pid) with SIGINT"
	stop witness "$witness_pid"
fi

# ---- report ---------------------------------------------------------------------------------

sent="$(grep -o 'summary: sent=[0-9]*' "$LOG_DIR/test_publisher.err" 2>/dev/null | tail -n 1 | sed 's/.*sent=//' || true)"
sent_args=()
if [[ -n "$sent" ]]; then
	sent_args=(--sent "$sent")
else
	say "warning: no 'summary: sent=' line in $LOG_DIR/test_publisher.err; counting sent from the seqs seen"
fi

fault_args=()
for at in ${fault_ms[@]+"${fault_ms[@]}"}; do
	fault_args+=(--kill-ms "$at")
done
case "$FAULT" in
kill)
	title="primary killed after $RUN_SECS s"
	;;
stop)
	fault_args+=(--fault-label "primary stopped (SIGSTOP $STOP_SECS s)")
	title="primary stopped (SIGSTOP) for $STOP_SECS s after $RUN_SECS s"
	;;
kill-restart-kill)
	title="primary killed after $RUN_SECS s, restarted, new primary killed"
	;;
esac

say "report:"
echo
set +e
"$bin/report" \
	--sub "$LOG_DIR/subscriber.out" \
	--acks "$LOG_DIR/test_publisher.out" \
	--published "$LOG_DIR/published.log" \
	${sent_args[@]+"${sent_args[@]}"} \
	${fault_args[@]+"${fault_args[@]}"} \
	--max-silence-ms "$MAX_SILENCE_MS" \
	--svg "$LOG_DIR/run.svg" \
	--title "edgebroker failover: $TOPIC at $RATE_HZ Hz, $title" |
	tee "$LOG_DIR/report.txt"
status="${PIPESTATUS[0]}"
set -e
if [[ "$FAULT" == stop ]]; then
	# The report judges the subscriber; the fencing of the resumed primary is judged here.
	if [[ "$stepped_down" == backup ]]; then
		verdict="PASS (the resumed primary reports role=backup)"
	else
		verdict="FAIL (the resumed primary did not step down: role=${stepped_down:-no answer})"
		((status != 0)) || status=1
	fi
	printf 'step-down check:   %s\n' "$verdict" | tee -a "$LOG_DIR/report.txt"
fi
echo

say "logs:    $LOG_DIR"
say "report:  $LOG_DIR/report.txt"
say "picture: $LOG_DIR/run.svg"
exit "$status"
