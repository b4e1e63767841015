#!/usr/bin/env bash
# Failover figures: runs ./run_test.sh RUNS times for each fault kind (FAULT=kill, stop,
# kill-restart-kill) with the real release binaries, then prints a Markdown table of every run
# (the subscriber's longest silence around each fault, missing, duplicates, inversions, the
# verdict) and, per fault kind, the median and the maximum silence.
#
# The silence is report's rule: the longest gap between deliveries from 5 s before to 10 s
# after the fault, always counting the gap across it. With kill-restart-kill the two kills are
# about 8 s apart, so the first kill's window also holds the second; the "gap across" column
# (last delivery before the fault to the first after it) tells the two failovers apart.
#
# usage: scripts/failover_figures.sh [RUNS]        RUNS [5], also read from the environment
#
# Environment overrides (defaults in brackets); anything else run_test.sh reads (RATE_HZ,
# TOPIC, MAX_SILENCE_MS, STOP_SECS, RESTART_SECS, REJOIN_SECS, RUST_LOG) is passed on as is:
#   RUN_SECS [10] (before the first fault)  AFTER_SECS [5] (after the last one)
#   PRIMARY_PORT [28180]  BACKUP_PORT [28181]  FAULTS ["kill stop kill-restart-kill"]
#   OUT_DIR [run-logs/figures-<timestamp>]: one folder per run (<fault>-<n>/, with run_test.log)
#   and the table in figures.md.
#
# Exit code: 0 if every run passed, 1 if any failed, 2 for a bad setting or a failed build.
set -euo pipefail

RUNS="${1:-${RUNS:-5}}"
export RUN_SECS="${RUN_SECS:-10}"
export AFTER_SECS="${AFTER_SECS:-5}"
# Below Linux's ephemeral range (32768-60999), so no outgoing connection can hold them.
export PRIMARY_PORT="${PRIMARY_PORT:-28180}"
export BACKUP_PORT="${BACKUP_PORT:-28181}"
FAULTS="${FAULTS:-kill stop kill-restart-kill}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
OUT_DIR="${OUT_DIR:-$repo/run-logs/figures-$(date +%Y%m%d-%H%M%S)}"

say() { printf 'failover_figures.sh: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 2
}

[[ "$RUNS" =~ ^[0-9]+$ ]] || die "RUNS must be a positive integer, got '$RUNS'"
RUNS=$((10#$RUNS))
((RUNS >= 1)) || die "RUNS must be at least 1"
for fault in $FAULTS; do
	case "$fault" in
	kill | stop | kill-restart-kill) ;;
	*) die "FAULTS may name only kill, stop and kill-restart-kill, got '$fault'" ;;
	esac
done
# run_test.sh checks the rest of the settings (and the ports) itself, on the first run.

trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

say "building once (cargo build --release --bins); the runs use SKIP_BUILD=1"
cargo build --release --bins --quiet || die "the build failed"
mkdir -p "$OUT_DIR"

# ---- reading a report -----------------------------------------------------------------------

# The readers below print nothing (and succeed) when a run left no report.

# field FILE KEY: the first word of the value of `KEY:` in a report.
field() {
	[[ -f "$1" ]] || return 0
	sed -n -E "s/^$2: +([^ ]+).*/\1/p" "$1" | head -n 1
}

# silences FILE: the silence around each fault, one per line: `N`, or `>=N` when nothing was
# delivered after the fault (then N is only a lower bound).
silences() {
	[[ -f "$1" ]] || return 0
	sed -n -E 's/^(longest silence|silence at [a-z]+ [0-9]+): +(>= )?([0-9]+) ms.*/\2\3/p' "$1" |
		sed 's/ //'
}

# gaps FILE: for each fault, the gap between the last delivery before it and the first after it
# (`-` when one of them is missing).
gaps() {
	[[ -f "$1" ]] || return 0
	awk '
		/^last before (kill|fault)/ {
			n++
			before[n] = match($0, /[0-9]+ ms before/) ? substr($0, RSTART, RLENGTH) + 0 : ""
		}
		/^first after (kill|fault)/ {
			after[n] = match($0, /[0-9]+ ms after/) ? substr($0, RSTART, RLENGTH) + 0 : ""
		}
		END {
			for (i = 1; i <= n; i++) print (before[i] != "" && after[i] != "") ? before[i] + after[i] : "-"
		}' "$1"
}

# why FILE: the reasons a run failed, from the report's RESULT line and the step-down check.
why() {
	[[ -f "$1" ]] || return 0
	sed -n -E \
		-e 's/^RESULT: FAIL \((.*)\)$/\1/p' \
		-e 's/^step-down check: +FAIL \((.*)\)$/\1/p' "$1" |
		awk 'NR > 1 { printf "; " } { printf "%s", $0 }'
}

# ---- the runs -------------------------------------------------------------------------------

rows=()     # Markdown table rows, one per run
failed=0    # runs that did not pass
# Per series ("kill", "kill-restart-kill 2", ...): silence values, gaps across the fault.
declare -A values spans passes totals

n_faults=$(wc -w <<<"$FAULTS")
say "$((n_faults * RUNS)) run(s) (RUN_SECS=$RUN_SECS AFTER_SECS=$AFTER_SECS, ports $PRIMARY_PORT/$BACKUP_PORT); logs in $OUT_DIR"
for fault in $FAULTS; do
	for ((run = 1; run <= RUNS; run++)); do
		dir="$OUT_DIR/$fault-$run"
		mkdir -p "$dir"
		say "$fault run $run/$RUNS…"
		rc=0
		FAULT="$fault" LOG_DIR="$dir" SKIP_BUILD=1 ./run_test.sh >"$dir/run_test.log" 2>&1 || rc=$?
		((rc != 130 && rc != 143)) || die "run_test.sh was interrupted (see $dir/run_test.log)"

		report="$dir/report.txt"
		case "$rc" in
		0) result="PASS" ;;
		1) result="FAIL ($(why "$report"))" ;;
		*) result="ERROR (run_test.sh exit $rc: $(tail -n 1 "$dir/run_test.log" | sed 's/^run_test.sh: //'))" ;;
		esac
		((rc == 0)) || failed=$((failed + 1))
		totals[$fault]=$((${totals[$fault]:-0} + 1))
		((rc != 0)) || passes[$fault]=$((${passes[$fault]:-0} + 1))

		mapfile -t sil < <(silences "$report")
		mapfile -t gap < <(gaps "$report")
		shown=() shown_gaps=()
		for i in "${!sil[@]}"; do
			series="$fault"
			((${#sil[@]} == 1)) || series="$fault $((i + 1))"
			values[$series]+="${sil[$i]#>=} "
			[[ "$series" == "$fault" ]] || values[$fault]+="${sil[$i]#>=} "
			shown+=("${sil[$i]/>=/≥}")
			g="${gap[$i]:--}"
			shown_gaps+=("$g")
			[[ "$g" == - ]] && continue
			spans[$series]+="$g "
			[[ "$series" == "$fault" ]] || spans[$fault]+="$g "
		done
		silence="$(IFS=/; printf '%s' "${shown[*]:-}" | sed 's#/# / #g')"
		across="$(IFS=/; printf '%s' "${shown_gaps[*]:-}" | sed 's#/# / #g')"
		missing="$(field "$report" missing)"
		duplicates="$(field "$report" duplicates)"
		inversions="$(field "$report" 'order inversions')"
		rows+=("| $fault | $run | ${silence:-–} | ${across:-–} | ${missing:-–} | ${duplicates:-–} | ${inversions:-–} | $result |")
		say "$fault run $run/$RUNS: ${result%% *}, silence ${silence:-n/a} ms"
	done
done

# ---- the tables -----------------------------------------------------------------------------

# stats VALUES...: "median max" of whole numbers (the median of an even count is the mean of
# the middle two, rounded).
stats() {
	printf '%s\n' "$@" | sort -n | awk '
		NF { v[++n] = $1 }
		END {
			if (n == 0) { print "– –"; exit }
			m = (n % 2) ? v[(n + 1) / 2] : int((v[n / 2] + v[n / 2 + 1]) / 2 + 0.5)
			print m, v[n]
		}'
}

{
	echo "Failover figures: RUNS=$RUNS per fault kind at ${RATE_HZ:-10} Hz, real binaries, RUN_SECS=$RUN_SECS AFTER_SECS=$AFTER_SECS (stop: SIGSTOP ${STOP_SECS:-3} s; kill-restart-kill: restart after ${RESTART_SECS:-5} s, second kill ${REJOIN_SECS:-3} s after the restart). Logs: $OUT_DIR"
	echo
	echo "Silence: the longest gap between deliveries from 5 s before to 10 s after the fault (the gap across it always counts). Gap across: last delivery before the fault to the first after it. kill-restart-kill shows kill 1 / kill 2."
	echo
	echo "| fault | run | silence ms (per fault) | gap across the fault ms | missing | duplicates | inversions | result |"
	echo "|---|---|---|---|---|---|---|---|"
	printf '%s\n' "${rows[@]}"
	echo
	echo "| fault | silences | median silence ms | max silence ms | median gap across ms | max gap across ms | runs passed |"
	echo "|---|---|---|---|---|---|---|"
	for fault in $FAULTS; do
		series_list=("$fault")
		[[ "$fault" != kill-restart-kill ]] || series_list=("$fault 1" "$fault 2" "$fault")
		for series in "${series_list[@]}"; do
			# shellcheck disable=SC2086  # the values are space-separated numbers
			read -r median max < <(stats ${values[$series]:-})
			# shellcheck disable=SC2086
			read -r gap_median gap_max < <(stats ${spans[$series]:-})
			label="$series"
			if [[ "$series" == "$fault "* ]]; then
				label="$fault (kill ${series##* })"
			elif [[ "$fault" == kill-restart-kill ]]; then
				label="$fault (both kills)"
			fi
			count=$(wc -w <<<"${values[$series]:-}")
			echo "| $label | $count | $median | $max | $gap_median | $gap_max | ${passes[$fault]:-0}/${totals[$fault]:-0} |"
		done
	done
	echo
	if ((failed)); then
		echo "$failed of $((n_faults * RUNS)) runs did not pass."
	else
		echo "All $((n_faults * RUNS)) runs passed."
	fi
} | tee "$OUT_DIR/figures.md"

((failed == 0))
