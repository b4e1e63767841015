#!/usr/bin/env bash
# Counts the engine's lines of code: the edgebroker crate's src/ without the programs (bin/),
# the argument parsing (cli/), the run report (report/) and the client library (client/),
# counting only lines that are neither blank nor comments, and only before each file's
# `#[cfg(test)]`. Counted this way, db147fc's engine was 5,697 lines.
#
# usage: scripts/engine_lines.sh [--files]   (--files: one line per file, then the total)
set -euo pipefail
cd "$(dirname "$0")/.."
total=0
while IFS= read -r file; do
	n=$(awk '
		/^#\[cfg\(test\)\]/ { exit }
		/^[[:space:]]*$/ { next }
		/^[[:space:]]*\/\// { next }
		{ n++ }
		END { print n + 0 }
	' "$file")
	total=$((total + n))
	if [ "${1:-}" = "--files" ]; then printf '%6d %s\n' "$n" "$file"; fi
done < <(find src -name '*.rs' -not -path 'src/bin/*' -not -path 'src/cli/*' -not -path 'src/report/*' -not -path 'src/client/*' \
	-not -path 'src/harness/*' -not -path 'src/bench/*' | sort)
printf '%6d engine lines of code\n' "$total"
