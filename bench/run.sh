#!/usr/bin/env bash
# Benchmarks silo-proxy against a plain postmaster and PgBouncer on one data
# directory (make bench). Needs root: silos map a range of host uids. See
# bench/README.md for the method and what every number means.
#
# Environment:
#   QUICK=1        one short round, few cold starts and idle connections (a smoke test)
#   ROUNDS=4       interleaved rounds (even: each phase goes first equally often)
#   DURATION=10    seconds of pgbench per point
#   COLD=20        cold starts of each kind
#   IDLE=5000      idle client connections for the RSS figure (0 skips)
#   RELAYS=        experimental relays to measure next to the proxy, e.g. "rw,epoll,rw/1"
#                  (bench/experiments/relay MODE[/GOMAXPROCS])
#   POINTS=        only these points, e.g. "simple/1,simple/8,connect/4"
#   SKIP=          phases to skip: pgbench,cold,idle
#   OUT=bench      where results.json, results.txt and results.png go
#   SILO_PROXY=    use this silo-proxy binary instead of building bin/silo-proxy
#   PROXY_ENV=     NAME=VALUE words added to silo-proxy's environment, e.g. "GOMAXPROCS=1"
#   SILO_CPU_SHARES=  experiment: cpu.shares for the running silo's cgroup (see bench/README.md)
#   KEEP=1         keep the work directory (logs, configs, data)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go

if [ "$(id -u)" != 0 ]; then
	echo "bench/run.sh needs root: silos run privileged (a range of host uids); run it with sudo" >&2
	exit 1
fi
ensure_packages

# install_no_start installs Debian packages without letting their
# maintainer scripts start services: the packaged pgbouncer (port 6432)
# or a postgresql cluster must not run next to the benchmark.
install_no_start() {
	local policy=/usr/sbin/policy-rc.d created=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# temporary: bench/run.sh installs packages without starting them\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		created=1
	fi
	echo "installing: $*"
	export DEBIAN_FRONTEND=noninteractive
	local rc=0
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" </dev/null; } || rc=$?
	[ -n "$created" ] && rm -f "$policy"
	return $rc
}

missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
if [ ${#missing[@]} -gt 0 ]; then
	install_no_start "${missing[@]}" || echo "could not install ${missing[*]}: continuing without" >&2
fi
PGBOUNCER=$(command -v pgbouncer 2>/dev/null || true)
[ -z "$PGBOUNCER" ] && [ -x /usr/sbin/pgbouncer ] && PGBOUNCER=/usr/sbin/pgbouncer
[ -z "$PGBOUNCER" ] && echo "PgBouncer not available: its figures are skipped" >&2

if [ "${QUICK:-}" = 1 ]; then
	: "${ROUNDS:=1}" "${DURATION:=2}" "${COLD:=3}" "${IDLE:=200}" "${WARMUP:=1}"
fi
: "${ROUNDS:=4}" "${DURATION:=10}" "${COLD:=20}" "${IDLE:=5000}" "${WARMUP:=3}" "${OUT:=bench}"

# Each idle session holds descriptors in the proxy and in the harness;
# take the whole hard limit (raising it needs CAP_SYS_RESOURCE).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open files limit: $(ulimit -n)"

build_bench
args=(-proxy "$PROXY" -pgbouncer "$PGBOUNCER" -rounds "$ROUNDS" -duration "${DURATION}s" -warmup "${WARMUP}s"
	-cold "$COLD" -idle "$IDLE" -out "$OUT")
if [ -n "${RELAYS:-}" ]; then
	go build -o bin/silo-bench-relay ./bench/experiments/relay
	args+=(-relay bin/silo-bench-relay -relays "$RELAYS")
fi
[ -n "${POINTS:-}" ] && args+=(-points "$POINTS")
for e in ${PROXY_ENV:-}; do args+=(-proxy-env "$e"); done
[ -n "${SILO_CPU_SHARES:-}" ] && args+=(-silo-cpu-shares "$SILO_CPU_SHARES")
[ -n "${SKIP:-}" ] && args+=(-skip "$SKIP")
[ "${KEEP:-}" = 1 ] && args+=(-keep)
exec bin/silo-bench "${args[@]}"
