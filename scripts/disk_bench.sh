#!/usr/bin/env bash
# What the log on disk costs: the pair memory-only and with --data-dir in each --fsync mode,
# under the load generator of ../shared/perf/peers.sh (peerbench, `edge` mode: CLIENTS
# connections, idempotent PUB, each waiting for its ACK, or WINDOW=W publishes at once), then
# Redis with `--appendonly yes --appendfsync always` beside it.
#
#   edge-memory   the pair as peers.sh runs it (compute off, no --data-dir)
#   edge-never    --data-dir, --fsync never   (the ACK waits for write(2))
#   edge-batch    --data-dir, --fsync batch   (the ACK waits for write(2); fsync every 100 ms)
#   edge-always   --data-dir, --fsync always  (the ACK waits for fsync; one fsync per batch)
#   redis-aof     peerbench `redis` (PUBLISH) against Redis with appendfsync always: shown for
#                 the record, not a fair peer, since PUBLISH never reaches the AOF
#   redis-set     redis-benchmark SET (the same payload, clients and pipelining) against that
#                 Redis: a write that is fsynced before its reply, the fair durable peer
#
# One JSON line per run (peerbench's; redis-set's converted). The data folders live in a
# fresh temporary folder on the same disk as $TMPDIR.
# Usage: scripts/disk_bench.sh BIN_DIR [CLIENTS=8] [MESSAGES=80000]   (WINDOW=W, PAY=B, MODES="...")
#   BIN_DIR holds the project's release `primary` and `backup`; needs redis-server and
#   redis-benchmark (apt-get install redis-server), and peerbench: $PEERBENCH, or built from
#   ../shared/perf/peerbench as peers.sh builds it.
# Machines are noisy: compare within one run, and repeat the run.
set -u
BIN=$(cd "$1" && pwd); C=${2:-8}; N=${3:-80000}; PAY=${PAY:-32}; W=${WINDOW:-1}
MODES=${MODES:-"memory never batch always"}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PEERBENCH:-}" ]; then
  export CARGO_TARGET_DIR=${PEERBENCH_TARGET:-${TMPDIR:-/tmp}/peerbench-target}
  cargo build --release -q --manifest-path "$HERE/../../shared/perf/peerbench/Cargo.toml" || exit 2
  PEERBENCH=$CARGO_TARGET_DIR/release/peerbench
fi
S=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$S"; }
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
up() { for i in $(seq 100); do python3 -c "import socket;socket.create_connection(('127.0.0.1',$1),timeout=0.2)" 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
bench() { "$PEERBENCH" "$@" --clients $C --messages $N --payload $PAY --window $W; }

for mode in $MODES; do
  P=$(port); B=$(port); pf=(); bf=()
  if [ "$mode" != memory ]; then
    pf=(--data-dir "$S/p-$mode" --fsync "$mode"); bf=(--data-dir "$S/b-$mode" --fsync "$mode")
  fi
  "$BIN/primary" $P 127.0.0.1:$B --bind 127.0.0.1 --compute-ms 0 "${pf[@]}" >/dev/null 2>"$S/p.err" & p=$!
  up $P
  "$BIN/backup" $B 127.0.0.1:$P --bind 127.0.0.1 --compute-ms 0 "${bf[@]}" >/dev/null 2>"$S/b.err" & b=$!
  pids+=($p $b)
  up $B; sleep 1
  bench edge 127.0.0.1:$P | sed "s/\"mode\":\"edge\"/\"mode\":\"edge-$mode\"/"
  kill $p $b; wait $p $b 2>/dev/null
done

R=$(port)
redis-server --port $R --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always --dir "$S" >/dev/null 2>&1 & pids+=($!)
up $R; sleep 0.5
bench redis 127.0.0.1:$R | sed 's/"mode":"redis"/"mode":"redis-aof"/'
redis-benchmark -p $R -t set -c $C -n $N -d $PAY -P $W -q --csv 2>/dev/null | tail -1 |
  awk -F, -v c=$C -v w=$W -v n=$N '{for (i = 1; i <= NF; i++) gsub(/"/, "", $i); printf "{\"mode\":\"redis-set\",\"clients\":%s,\"window\":%s,\"messages\":%s,\"throughput\":%.0f,\"p50_us\":%.0f,\"p99_us\":%.0f}\n", c, w, n, $2, $5*1000, $7*1000}'
