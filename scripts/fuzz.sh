#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 60s).
#   FUZZTIME=10s bash scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
fuzztime=${FUZZTIME:-60s}
status=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "== $pkg $target ($fuzztime)"
		if ! go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime"; then
			status=1
		fi
	done
done
exit $status
