#!/usr/bin/env bash
# The failover demo (SPEC §6), headless: build, start primary, backup, a subscriber and
# test_publisher, SIGKILL the primary after RUN_SECS, run AFTER_SECS more on the backup, stop
# everything this script started (and only that), then judge the run with `report`.
#
# Environment overrides (defaults in brackets):
#   PRIMARY_PORT [8080]  BACKUP_PORT [8081]  TOPIC [topicC]
#   RUN_SECS [30] (before the kill)  AFTER_SECS [10] (after the kill)  RATE_HZ [10]
#   MAX_SILENCE_MS [1000]  LOG_DIR [run-logs/<timestamp>]  RUST_LOG [info]
#
# Exit code: the report's (0 PASS, 1 FAIL); 2 for a bad setting, a busy port or a program
# that would not start.
set -euo pipefail

PRIMARY_PORT="${PRIMARY_PORT:-8080}"
BACKUP_PORT="${BACKUP_PORT:-8081}"
TOPIC="${TOPIC:-topicC}"
RUN_SECS="${RUN_SECS:-30}"
AFTER_SECS="${AFTER_SECS:-10}"
RATE_HZ="${RATE_HZ:-10}"
MAX_SILENCE_MS="${MAX_SILENCE_MS:-1000}"
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
for var in PRIMARY_PORT BACKUP_PORT RUN_SECS AFTER_SECS RATE_HZ MAX_SILENCE_MS; do
	is_uint "${!var}" || die 2 "$var must be a non-negative integer, got '${!var}'"
done
for var in PRIMARY_PORT BACKUP_PORT; do
	((10#${!var} >= 1 && 10#${!var} <= 65535)) || die 2 "$var must be a port 1-65535, got '${!var}'"
done
((10#$RATE_HZ > 0)) || die 2 "RATE_HZ must be at least 1"
[[ "$PRIMARY_PORT" != "$BACKUP_PORT" ]] || die 2 "PRIMARY_PORT and BACKUP_PORT must differ (both $PRIMARY_PORT)"
[[ -n "$TOPIC" && "$TOPIC" != *"|"* && "$TOPIC" != *" "* ]] || die 2 "TOPIC must be a non-empty word without '|' or spaces, got '$TOPIC'"

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

# On any exit: whatever this script started and is still running gets SIGTERM, then SIGKILL.
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
	local p signalled=0
	for p in ${pids[@]+"${pids[@]}"}; do
		if alive "$p"; then
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
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

for var in PRIMARY_PORT BACKUP_PORT; do
	if listening "${!var}"; then
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

say "building (cargo build --release --bins)"
cargo build --release --bins --quiet
for prog in primary backup subscriber test_publisher report; do
	[[ -x "$bin/$prog" ]] || die 2 "$bin/$prog was not built"
done

mkdir -p "$LOG_DIR"
say "logs in $LOG_DIR"

# start NAME ARGS...: runs $bin/NAME in the background, output to $LOG_DIR/NAME.{out,err};
# its pid is left in $started.
start() {
	local name="$1"
	shift
	"$bin/$name" "$@" >"$LOG_DIR/$name.out" 2>"$LOG_DIR/$name.err" &
	started=$!
	pids+=("$started")
	say "started $name pid $started: $name $*"
}

primary_addr="127.0.0.1:$PRIMARY_PORT"
backup_addr="127.0.0.1:$BACKUP_PORT"

start primary "$PRIMARY_PORT" "$backup_addr"
primary_pid=$started
wait_listening primary "$primary_pid" "$PRIMARY_PORT"

start backup "$BACKUP_PORT" "$primary_addr"
backup_pid=$started
wait_listening backup "$backup_pid" "$BACKUP_PORT"

start subscriber "$TOPIC" "$primary_addr" "$backup_addr" --timestamps
subscriber_pid=$started
# The subscriber prints nothing until a message arrives, so there is no event to wait on;
# one second is ample for two local connects and SUBSCRIBEs.
sleep 1
alive "$subscriber_pid" || die 2 "subscriber exited at start (see $LOG_DIR/subscriber.err)"

start test_publisher "$TOPIC" "$primary_addr" "$backup_addr" --rate-hz "$RATE_HZ" --timestamps
publisher_pid=$started

# ---- the run --------------------------------------------------------------------------------

say "running $RUN_SECS s before the kill…"
pause "$RUN_SECS"

check_running() {
	alive "$2" || say "warning: $1 (pid $2) exited early (see $LOG_DIR/$1.err)"
}
check_running backup "$backup_pid"
check_running subscriber "$subscriber_pid"
check_running test_publisher "$publisher_pid"

kill_ms="$(date +%s%3N)"
[[ "$kill_ms" =~ ^[0-9]+$ ]] || kill_ms="$(($(date +%s) * 1000))"
if alive "$primary_pid"; then
	say "killing primary (pid $primary_pid) with SIGKILL at $kill_ms ms"
	kill -KILL "$primary_pid" 2>/dev/null || true
	# SIGKILL cannot be caught, so this wait is short; the redirect keeps bash's "Killed"
	# job notice out of the demo's output.
	wait "$primary_pid" 2>/dev/null || true
	forget "$primary_pid"
else
	say "warning: primary (pid $primary_pid) had already exited; kill time $kill_ms ms"
fi

say "running $AFTER_SECS s more on the backup…"
pause "$AFTER_SECS"

# ---- stop -----------------------------------------------------------------------------------

say "stopping test_publisher (pid $publisher_pid) with SIGINT"
stop test_publisher "$publisher_pid"
say "letting the subscriber drain…"
pause 1.5
say "stopping subscriber (pid $subscriber_pid) and backup (pid $backup_pid) with SIGINT"
stop subscriber "$subscriber_pid"
stop backup "$backup_pid"

# ---- report ---------------------------------------------------------------------------------

sent="$(grep -o 'summary: sent=[0-9]*' "$LOG_DIR/test_publisher.err" 2>/dev/null | tail -n 1 | sed 's/.*sent=//' || true)"
sent_args=()
if [[ -n "$sent" ]]; then
	sent_args=(--sent "$sent")
else
	say "warning: no 'summary: sent=' line in $LOG_DIR/test_publisher.err; counting sent from the seqs seen"
fi

say "report:"
echo
set +e
"$bin/report" \
	--sub "$LOG_DIR/subscriber.out" \
	--acks "$LOG_DIR/test_publisher.out" \
	${sent_args[@]+"${sent_args[@]}"} \
	--kill-ms "$kill_ms" \
	--max-silence-ms "$MAX_SILENCE_MS" \
	--svg "$LOG_DIR/run.svg" \
	--title "edgebroker failover: $TOPIC at $RATE_HZ Hz, primary killed after $RUN_SECS s" |
	tee "$LOG_DIR/report.txt"
status="${PIPESTATUS[0]}"
set -e
echo

say "logs:    $LOG_DIR"
say "report:  $LOG_DIR/report.txt"
say "picture: $LOG_DIR/run.svg"
exit "$status"
