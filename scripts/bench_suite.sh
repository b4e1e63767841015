#!/usr/bin/env bash
# The benchmark of record (BENCHMARKS.md): builds release binaries and measures, on loopback,
# a primary+backup pair with synchronous replication (compute off unless said):
#   1. publish→ACK latency, 1 publisher, 1 subscriber
#   2. throughput, 8 publishers, 1 subscriber
#   3. 10,000 subscriber connections on one broker: RSS, and one message fanned out to all
#   4. compute on (50–150 ms): N workers over N topics reach N × 10 messages/s
#   5. CPU used by an idle pair over 10 s
# and, if redis-server and redis-benchmark are installed, redis-benchmark beside it.
# Ports: BASE_PORT [17600] and up. Every process it starts is stopped by pid.
set -euo pipefail

BASE_PORT="${BASE_PORT:-17600}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cargo build --release --bins --quiet
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
out="$(mktemp -d)"
pids=()
cleanup() {
	local p
	for p in ${pids[@]+"${pids[@]}"}; do kill -INT "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in ${pids[@]+"${pids[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
	rm -rf "$out"
}
trap cleanup EXIT

say() { printf 'bench_suite: %s\n' "$*" >&2; }
json() { # json FILE KEY: a number from the last line of a bench --json output
	tail -n 1 "$1" | tr ',{}' '\n' | sed -n "s/^\"$2\":\(.*\)$/\1/p"
}
wait_port() {
	local _
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "port $1 did not open" >&2
	return 1
}
start() { # start NAME ARGS...: a program in the background, its pid remembered
	local name="$1"
	shift
	"$bin/$name" "$@" >"$out/$name.$BASHPID.$RANDOM.out" 2>>"$out/$name.err" &
	pids+=("$!")
	last_pid=$!
}
stop() {
	kill -INT "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}
pair() { # pair PORT FLAGS...: a primary on PORT and its backup on PORT+1
	local p="$1"
	shift
	start primary "$p" "127.0.0.1:$((p + 1))" --bind 127.0.0.1 "$@"
	primary_pid=$last_pid
	wait_port "$p"
	start backup "$((p + 1))" "127.0.0.1:$p" --bind 127.0.0.1 "$@"
	backup_pid=$last_pid
	wait_port "$((p + 1))"
	sleep 0.5 # let the primary sync its backup
}
rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "| measurement | figure |"
echo "|---|---|"

# 1 and 2: latency and throughput, compute off, replication on.
pair "$BASE_PORT" --compute-ms 0
say "1 publisher, 20000 messages"
"$bin/bench" "127.0.0.1:$BASE_PORT" "127.0.0.1:$((BASE_PORT + 1))" --publishers 1 --messages 20000 --json >"$out/b1" 2>/dev/null
echo "| 1 publisher: publish→ACK p50 / p90 / p99 / max (µs) | $(json "$out/b1" ack_p50_us) / $(json "$out/b1" ack_p90_us) / $(json "$out/b1" ack_p99_us) / $(json "$out/b1" ack_max_us) |"
echo "| 1 publisher: publish→delivery p50 / p99 (µs) | $(json "$out/b1" deliver_p50_us) / $(json "$out/b1" deliver_p99_us) |"
echo "| 1 publisher: throughput (msg/s); lost, duplicates | $(json "$out/b1" throughput_msgs_per_s); $(json "$out/b1" lost), $(json "$out/b1" duplicates) |"
say "8 publishers, 200000 messages"
"$bin/bench" "127.0.0.1:$BASE_PORT" "127.0.0.1:$((BASE_PORT + 1))" --publishers 8 --messages 200000 --json >"$out/b8" 2>/dev/null
echo "| 8 publishers: throughput (msg/s) | $(json "$out/b8" throughput_msgs_per_s) |"
echo "| 8 publishers: publish→ACK p50 / p99 (µs) | $(json "$out/b8" ack_p50_us) / $(json "$out/b8" ack_p99_us) |"
echo "| 8 publishers: lost, duplicates | $(json "$out/b8" lost), $(json "$out/b8" duplicates) |"

# 5: an idle pair (measured on the same pair, now quiet).
sleep 1
c0=$(($(cpu_ticks "$primary_pid") + $(cpu_ticks "$backup_pid")))
sleep 10
c1=$(($(cpu_ticks "$primary_pid") + $(cpu_ticks "$backup_pid")))
hz=$(getconf CLK_TCK)
echo "| idle pair: CPU over 10 s (both brokers) | $(awk -v t=$((c1 - c0)) -v hz="$hz" 'BEGIN { printf "%.2f%% of one core", 100 * t / hz / 10 }') |"
stop "$primary_pid"
stop "$backup_pid"

# 3: 10,000 subscribers on one broker (it needs vm.max_map_count ≥ 200000; see README).
port=$((BASE_PORT + 10))
start primary "$port" --bind 127.0.0.1 --compute-ms 0 --max-connections 10010
lone=$last_pid
wait_port "$port"
idle=$(rss_kib "$lone")
"$bin/bench" "127.0.0.1:$port" --subscribers 10000 --messages 1 --json >"$out/b10k" 2>/dev/null &
bench_pid=$!
peak=0
while kill -0 "$bench_pid" 2>/dev/null; do
	r=$(rss_kib "$lone")
	((r > peak)) && peak=$r
	sleep 0.2
done
wait "$bench_pid" || true
echo "| 10,000 subscribers: broker RSS idle → peak | $((idle / 1024)) MiB → $((peak / 1024)) MiB ($(((peak - idle) / 10000)) KiB per connection) |"
echo "| 10,000 subscribers: one message delivered to all: p50 / max (µs) | $(json "$out/b10k" deliver_p50_us) / $(json "$out/b10k" deliver_max_us) |"
echo "| 10,000 subscribers: delivered, lost | $(json "$out/b10k" delivered), $(json "$out/b10k" lost) |"
stop "$lone"

# 4: compute on: one worker, then two, over two topics (each bench waits up to 10 s for its
# deliveries, so 60 messages at ~100 ms fit even with one worker).
for workers in 1 2; do
	port=$((BASE_PORT + 20 + workers * 2))
	start primary "$port" --bind 127.0.0.1 --workers "$workers"
	w=$last_pid
	wait_port "$port"
	start_ms=$(date +%s%3N)
	"$bin/bench" "127.0.0.1:$port" --topic a --messages 30 --json >"$out/wa$workers" 2>/dev/null &
	a=$!
	"$bin/bench" "127.0.0.1:$port" --topic b --messages 30 --json >"$out/wb$workers" 2>/dev/null &
	b=$!
	wait "$a" "$b" || true
	end_ms=$(date +%s%3N)
	delivered=$(($(json "$out/wa$workers" delivered) + $(json "$out/wb$workers" delivered)))
	echo "| compute 50–150 ms, $workers worker(s), 2 topics × 30 messages: delivered, msg/s | $delivered, $(awk -v n="$delivered" -v ms=$((end_ms - start_ms)) 'BEGIN { printf "%.1f", n * 1000 / ms }') |"
	stop "$w"
done

# Beside it: redis-benchmark, if installed.
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
	port=$((BASE_PORT + 30))
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
	pids+=("$!")
	redis=$!
	wait_port "$port"
	for c in 1 8; do
		rps=$(redis-benchmark -h 127.0.0.1 -p "$port" -n 200000 -c "$c" -q PUBLISH ch hello 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
		echo "| redis-benchmark -c $c PUBLISH (no replication) | $rps |"
	done
	kill "$redis" 2>/dev/null || true
else
	echo "| redis-benchmark | not installed (apt-get install redis-server redis-tools) |"
fi
