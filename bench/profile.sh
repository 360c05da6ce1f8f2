#!/usr/bin/env bash
# Profiles the process between pgbench and the silo (silo-proxy, PgBouncer,
# the experimental relays) at pgbench -S -c 8: system calls per transaction
# (strace -c -f), CPU time, context switches and migrations per transaction
# (perf stat, software events) and where the CPU time goes (perf record -g
# with cpu-clock). Writes OUT/summary.txt and one file per target and tool.
# Needs root, strace and perf (Debian: strace, linux-perf).
#
# Environment: DURATION=8 (seconds per measure), RELAYS=splice,rw,epoll,epollraw,
# OUT=bench/profile, POINT=simple/8 (or e.g. connect/4: pgbench -S -C -c 4),
# SILO_PROXY= (a silo-proxy binary instead of building one), PROXY_ENV= (as in run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
if [ "$(id -u)" != 0 ]; then
	echo "bench/profile.sh needs root (silos, strace and perf on other users' processes)" >&2
	exit 1
fi
ensure_packages
for tool in strace perf; do
	if ! command -v $tool >/dev/null 2>&1; then
		echo "installing $tool"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq && apt-get install -y -qq --no-install-recommends "$([ $tool = perf ] && echo linux-perf || echo strace)" </dev/null
	fi
done
: "${DURATION:=8}" "${RELAYS=splice,rw,epoll,epollraw}" "${OUT:=bench/profile}"
PGBOUNCER=$(command -v pgbouncer 2>/dev/null || { [ -x /usr/sbin/pgbouncer ] && echo /usr/sbin/pgbouncer; } || true)
build_bench
args=(-proxy "$PROXY" -pgbouncer "$PGBOUNCER" -duration "${DURATION}s" -profile "$OUT" -points "${POINT:-simple/8}")
for e in ${PROXY_ENV:-}; do args+=(-proxy-env "$e"); done
if [ -n "$RELAYS" ]; then
	go build -o bin/silo-bench-relay ./bench/experiments/relay
	args+=(-relay bin/silo-bench-relay -relays "$RELAYS")
fi
exec bin/silo-bench "${args[@]}"
