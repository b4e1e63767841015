#!/usr/bin/env bash
# The seed's four-terminal manual run as tmux panes a class can follow: the live view of the
# pair (pairstat) across the top, the subscriber and test_publisher on topicC, a "demo" pane
# that says what happens and when, and the two brokers' logs at the bottom. After KILL_AFTER
# seconds the demo pane kills the primary with SIGKILL and says so (and keeps saying it);
# the live view marks the takeover; the subscriber's lines switch from [PRIMARY] to
# [BACKUP] without a gap. AFTER_SECS later the demo stops what it started, by pid, and
# prints the same report as run_test.sh (its pane zoomed to the whole window; Ctrl-b z
# shows the other panes again). The panes stay on screen until you end the session.
#
# Environment overrides (defaults in brackets):
#   BIND [127.0.0.1] (the brokers' --bind: only this machine can reach them)
#   PRIMARY_PORT [8080]  BACKUP_PORT [8081]  TOPIC [topicC]  RATE_HZ [10]
#   KILL_AFTER [30] (seconds before the kill)  AFTER_SECS [15] (seconds after it)
#   MAX_SILENCE_MS [1000]  LOG_DIR [run-logs/demo-<timestamp>]  SESSION [edgebroker-demo]
#   WITNESS [0] (1: a witness on WITNESS_PORT [8082] in a second tmux window, named by both
#   brokers with --witness and shown by the live view as a third row)
# Leave the session with Ctrl-b d; end it with `tmux kill-session -t edgebroker-demo`.
#
# The demo pane runs this script again as `tmux_demo.sh --demo-pane PIDS…` (inside tmux, so
# it outlives the script that set the panes up).
set -euo pipefail

BIND="${BIND:-127.0.0.1}"
PRIMARY_PORT="${PRIMARY_PORT:-8080}"
BACKUP_PORT="${BACKUP_PORT:-8081}"
TOPIC="${TOPIC:-topicC}"
RATE_HZ="${RATE_HZ:-10}"
KILL_AFTER="${KILL_AFTER:-30}"
AFTER_SECS="${AFTER_SECS:-15}"
MAX_SILENCE_MS="${MAX_SILENCE_MS:-1000}"
SESSION="${SESSION:-edgebroker-demo}"
WITNESS="${WITNESS:-0}"
WITNESS_PORT="${WITNESS_PORT:-8082}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

die() {
	printf 'tmux_demo.sh: %s\n' "$*" >&2
	exit 2
}

# ---- the demo pane: the timeline, the kill, the stop and the report -------------------------

# alive PID: true while the process runs (the panes' programs are tmux's children, which
# reaps them, so an exited one fails `kill -0`).
alive() { kill -0 "$1" 2>/dev/null; }

# stop PID: SIGINT (the programs print their summaries), then SIGKILL after 5 s.
stop() {
	local pid="$1" i
	alive "$pid" || return 0
	kill -INT "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		alive "$pid" || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

# countdown SECS TEXT: one line that counts down in place.
countdown() {
	local left
	for ((left = $1; left > 0; left--)); do
		printf '\r  %s in %2d s ' "$2" "$left"
		sleep 1
	done
	printf '\r%*s\r' 40 ''
}

clock() { date -u +%H:%M:%S; }

demo_pane() {
	local primary_pid="$1" backup_pid="$2" subscriber_pid="$3" publisher_pid="$4" pairstat_pid="$5"
	local witness_pid="${6:-}"
	local kill_ms sent
	printf 'the pair runs; the primary is pid %s\n' "$primary_pid"
	countdown "$KILL_AFTER" "kill -9 of the primary"
	kill_ms="$(date +%s%3N)"
	kill -KILL "$primary_pid" 2>/dev/null || true
	printf '\e[1;31m%s UTC: KILLED THE PRIMARY\e[0m\n(pid %s, SIGKILL)\n' "$(clock)" "$primary_pid"
	tmux display-message -t "$SESSION" "killed the primary (pid $primary_pid) with SIGKILL"
	printf 'watch: the live view (top), the\nsubscriber switching to [BACKUP]\n'
	countdown "$AFTER_SECS" "the demo ends"

	printf '%s UTC: stopping what it started\n' "$(clock)"
	# The live view first, so its last table shows the pair as the run left it.
	stop "$pairstat_pid"
	stop "$publisher_pid"
	sleep 1.5 # the subscriber drains what is still on its way
	stop "$subscriber_pid"
	stop "$backup_pid"
	[[ -z "$witness_pid" ]] || stop "$witness_pid"

	sent="$(grep -o 'summary: sent=[0-9]*' "$LOG_DIR/test_publisher.err" | tail -n 1 | sed 's/.*sent=//' || true)"
	tmux resize-pane -Z -t "$TMUX_PANE"
	sleep 0.3 # let the zoomed pane take its new size before drawing on it
	# Clear the scrollback and the screen. The first line stays blank: when the pane's
	# program exits, tmux scrolls it by one line to say so.
	printf '\e[3J\e[H\e[2J\nthe demo is over; its report:\n\n'
	"$bin/report" \
		--sub "$LOG_DIR/subscriber.out" \
		--acks "$LOG_DIR/test_publisher.out" \
		--published "$LOG_DIR/published.log" \
		${sent:+--sent "$sent"} \
		--kill-ms "$kill_ms" \
		--max-silence-ms "$MAX_SILENCE_MS" \
		--svg "$LOG_DIR/run.svg" \
		--title "edgebroker failover: $TOPIC at $RATE_HZ Hz, primary killed after $KILL_AFTER s" |
		tee "$LOG_DIR/report.txt" || true
	printf '\nlogs, report and picture (run.svg) in %s\n' "$LOG_DIR"
	printf 'Ctrl-b z: the other panes; Ctrl-b d: leave; tmux kill-session -t %s: end\n' "$SESSION"
}

if [[ "${1:-}" == --demo-pane ]]; then
	shift
	demo_pane "$@"
	exit 0
fi

# ---- setting the panes up -------------------------------------------------------------------

if ! command -v tmux >/dev/null; then
	die "tmux is not installed. Install it with 'sudo apt-get install tmux' (Debian, Ubuntu),
'sudo dnf install tmux' (Fedora) or 'brew install tmux' (macOS); ./run_test.sh runs the same
demo without tmux."
fi
[[ "$WITNESS" == 0 || "$WITNESS" == 1 ]] || die "WITNESS must be 0 or 1, got '$WITNESS'"
for var in PRIMARY_PORT BACKUP_PORT WITNESS_PORT RATE_HZ KILL_AFTER AFTER_SECS MAX_SILENCE_MS; do
	[[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer, got '${!var}'"
done
[[ "$BIND" =~ ^[0-9A-Fa-f.:]+$ ]] || die "BIND must be an IP address (127.0.0.1, 0.0.0.0, ::1), got '$BIND'"
tmux has-session -t "$SESSION" 2>/dev/null && die "a tmux session '$SESSION' already exists (tmux kill-session -t $SESSION)"

cd "$repo"
echo "tmux_demo.sh: building (cargo build --release --bins)"
cargo build --release --bins --quiet
LOG_DIR="${LOG_DIR:-$repo/run-logs/demo-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$LOG_DIR"

case "$BIND" in
0.0.0.0) host=127.0.0.1 ;;
::) host=::1 ;;
*) host="$BIND" ;;
esac
if [[ "$host" == *:* ]]; then addr="[$host]"; else addr="$host"; fi
primary="$addr:$PRIMARY_PORT"
backup="$addr:$BACKUP_PORT"
# With WITNESS=1 the brokers and the live view name the witness.
witness_args=()
[[ "$WITNESS" == 0 ]] || witness_args=(--witness "$addr:$WITNESS_PORT")

# A pane's command line for tmux's shell, each word quoted.
quoted() { printf '%q ' "$@"; }

# logged NAME FILTER PROG ARGS...: a pane command that runs PROG in place of the pane's
# shell (so the pane's pid is the program's), keeps copies of its stdout and stderr in
# $LOG_DIR/NAME.{out,err}, and shows its stdout through FILTER (a shell command).
logged() {
	local out="$LOG_DIR/$1.out" err="$LOG_DIR/$1.err" filter="$2"
	shift 2
	quoted bash -c "exec $(quoted "$@") > >(tee $(quoted "$out") | $filter) 2> >(tee $(quoted "$err") >&2)"
}
# The subscriber's and test_publisher's lines start with a timestamp, for the report; the
# panes show them without it.
untimed="cut -d' ' -f2-"

# A pane's pid: the program's, since each pane execs its program.
pane_pid() { tmux display-message -p -t "$1" '#{pane_pid}'; }

# wait_listening PANE PORT: until the broker in PANE listens on PORT (10 s at most).
wait_listening() {
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/$host/$2") 2>/dev/null && return 0
		[[ "$(tmux display-message -p -t "$1" '#{pane_dead}')" == 1 ]] && break
		sleep 0.1
	done
	tmux kill-session -t "$SESSION"
	die "the broker on port $2 did not start; is the port free? (logs in $LOG_DIR)"
}

# The layout at 160x45 (it scales with the terminal that attaches):
#   live view (pairstat), full width
#   subscriber, 116 columns so its log lines fit | test_publisher over the demo pane
#   primary's log                                | backup's log
new_pane() { # new_pane TITLE TMUX-COMMAND...: runs tmux to make a pane, titles it, prints its id
	local title="$1" id
	shift
	id="$("$@")"
	tmux select-pane -t "$id" -T "$title"
	printf '%s\n' "$id"
}
primary_pane="$(new_pane "primary :$PRIMARY_PORT (log)" \
	tmux new-session -d -P -F '#{pane_id}' -s "$SESSION" -x 160 -y 45 -n demo \
	"$(logged primary cat "$bin/primary" "$PRIMARY_PORT" "$backup" --bind "$BIND" ${witness_args[@]+"${witness_args[@]}"})")"
# From here on a failed step ends the session, and with it every program it runs.
trap 'tmux kill-session -t "$SESSION" 2>/dev/null' ERR
tmux set-option -t "$SESSION" remain-on-exit on >/dev/null
tmux set-option -t "$SESSION" pane-border-status top >/dev/null
if [[ "$WITNESS" == 1 ]]; then
	# Its own window (Ctrl-b n shows its log); the brokers find it once it listens.
	witness_pane="$(new_pane "witness :$WITNESS_PORT (log)" \
		tmux new-window -d -P -F '#{pane_id}' -t "$SESSION" -n witness \
		"$(logged witness cat "$bin/witness" "$WITNESS_PORT" --bind "$BIND")")"
	wait_listening "$witness_pane" "$WITNESS_PORT"
fi
wait_listening "$primary_pane" "$PRIMARY_PORT"
view_pane="$(new_pane "live view: pairstat $primary $backup" \
	tmux split-window -P -F '#{pane_id}' -v -b -l 32 -t "$primary_pane" \
	"$(quoted "$bin/pairstat" "$primary" "$backup" ${witness_args[@]+"${witness_args[@]}"})")"
backup_pane="$(new_pane "backup :$BACKUP_PORT (log)" \
	tmux split-window -P -F '#{pane_id}' -h -l 79 -t "$primary_pane" \
	"$(logged backup cat "$bin/backup" "$BACKUP_PORT" "$primary" --bind "$BIND" ${witness_args[@]+"${witness_args[@]}"})")"
wait_listening "$backup_pane" "$BACKUP_PORT"
subscriber_pane="$(new_pane "subscriber $TOPIC" \
	tmux split-window -P -F '#{pane_id}' -v -l 18 -t "$view_pane" \
	"$(logged subscriber "$untimed" "$bin/subscriber" "$TOPIC" "$primary" "$backup" --timestamps)")"
sleep 1 # two local connects and subscribes; nothing to wait on, the subscriber prints nothing yet
publisher_pane="$(new_pane "test_publisher $RATE_HZ Hz" \
	tmux split-window -P -F '#{pane_id}' -h -l 43 -t "$subscriber_pane" \
	"$(logged test_publisher "$untimed" "$bin/test_publisher" "$TOPIC" "$primary" "$backup" \
		--rate-hz "$RATE_HZ" --timestamps --publish-log "$LOG_DIR/published.log")")"

pids=()
for pane in "$primary_pane" "$backup_pane" "$subscriber_pane" "$publisher_pane" "$view_pane" \
	${witness_pane:+"$witness_pane"}; do
	pids+=("$(pane_pid "$pane")")
done
demo_env=(env "SESSION=$SESSION" "LOG_DIR=$LOG_DIR" "KILL_AFTER=$KILL_AFTER" "AFTER_SECS=$AFTER_SECS"
	"TOPIC=$TOPIC" "RATE_HZ=$RATE_HZ" "MAX_SILENCE_MS=$MAX_SILENCE_MS" "CARGO_TARGET_DIR=${bin%/release}")
new_pane "demo: kill at $KILL_AFTER s, end $AFTER_SECS s later" \
	tmux split-window -P -F '#{pane_id}' -v -l 9 -t "$publisher_pane" \
	"$(quoted "${demo_env[@]}" "$repo/scripts/tmux_demo.sh" --demo-pane "${pids[@]}")" >/dev/null

echo "tmux_demo.sh: session '$SESSION'; the primary (pid ${pids[0]}) is killed after $KILL_AFTER s, the demo ends $AFTER_SECS s later"
echo "tmux_demo.sh: logs in $LOG_DIR"
if [[ -t 0 && -t 1 ]]; then
	exec tmux attach -t "$SESSION"
else
	echo "tmux_demo.sh: no terminal here; watch with: tmux attach -t $SESSION"
fi
