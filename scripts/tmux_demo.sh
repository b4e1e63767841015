#!/usr/bin/env bash
# The seed's four-terminal manual run, as four tmux panes: primary, backup, subscriber and
# test_publisher on topicC. After KILL_AFTER seconds the primary is killed with SIGKILL, so a
# class can watch the subscriber's lines switch from [PRIMARY] to [BACKUP] without a gap.
#
# Environment overrides: PRIMARY_PORT [8080], BACKUP_PORT [8081], TOPIC [topicC],
# KILL_AFTER [30], RATE_HZ [10], SESSION [edgebroker-demo].
# Leave the session with Ctrl-b d; end it with `tmux kill-session -t edgebroker-demo`.
set -euo pipefail

PRIMARY_PORT="${PRIMARY_PORT:-8080}"
BACKUP_PORT="${BACKUP_PORT:-8081}"
TOPIC="${TOPIC:-topicC}"
KILL_AFTER="${KILL_AFTER:-30}"
RATE_HZ="${RATE_HZ:-10}"
SESSION="${SESSION:-edgebroker-demo}"

die() {
	printf 'tmux_demo.sh: %s\n' "$*" >&2
	exit 2
}

if ! command -v tmux >/dev/null; then
	die "tmux is not installed. Install it with 'sudo apt-get install tmux' (Debian, Ubuntu),
'sudo dnf install tmux' (Fedora) or 'brew install tmux' (macOS); ./run_test.sh runs the same
demo without tmux."
fi
tmux has-session -t "$SESSION" 2>/dev/null && die "a tmux session '$SESSION' already exists (tmux kill-session -t $SESSION)"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
echo "tmux_demo.sh: building (cargo build --release --bins)"
cargo build --release --bins --quiet
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
primary="127.0.0.1:$PRIMARY_PORT"
backup="127.0.0.1:$BACKUP_PORT"

# Each pane runs its program directly (exec), so the pane's pid is the program's pid, and a
# dead pane stays on screen to show what happened.
pane() { # pane TITLE COMMAND...: the first pane, or a split of the previous one
	local title="$1" id
	shift
	if [[ -z "${last:-}" ]]; then
		id="$(tmux new-session -d -P -F '#{pane_id}' -s "$SESSION" -x 200 -y 50 -n demo "$*")"
		tmux set-option -t "$SESSION" remain-on-exit on >/dev/null
		tmux set-option -t "$SESSION" pane-border-status top >/dev/null
	else
		id="$(tmux split-window -P -F '#{pane_id}' -t "$last" "$*")"
	fi
	tmux select-pane -t "$id" -T "$title"
	tmux select-layout -t "$SESSION:demo" tiled >/dev/null
	last="$id"
	sleep 0.5
}
pane "primary :$PRIMARY_PORT" exec "$bin/primary" "$PRIMARY_PORT" "$backup"
primary_pane="$last"
pane "backup :$BACKUP_PORT" exec "$bin/backup" "$BACKUP_PORT" "$primary"
pane "subscriber $TOPIC" exec "$bin/subscriber" "$TOPIC" "$primary" "$backup"
pane "test_publisher $RATE_HZ Hz" exec "$bin/test_publisher" "$TOPIC" "$primary" "$backup" --rate-hz "$RATE_HZ"

primary_pid="$(tmux display-message -p -t "$primary_pane" '#{pane_pid}')"
# The killer runs inside tmux too, so it outlives this script and is gone with the session.
tmux new-window -d -t "$SESSION" -n killer \
	"sleep $KILL_AFTER; tmux display-message -t $SESSION 'killing the primary (pid $primary_pid) with SIGKILL'; kill -KILL $primary_pid"

echo "tmux_demo.sh: four panes in tmux session '$SESSION'; the primary (pid $primary_pid) is killed after $KILL_AFTER s"
if [[ -t 0 && -t 1 ]]; then
	exec tmux attach -t "$SESSION"
else
	echo "tmux_demo.sh: no terminal here; watch with: tmux attach -t $SESSION"
fi
