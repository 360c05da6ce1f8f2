#!/usr/bin/env bash
# The whole test suite: unit tests, fuzz seed corpora, and — as root — the
# integration tests that start real postmasters in real namespaces.
# Installs what is missing (PostgreSQL, psql, pgbench) first.
#
#   sudo bash scripts/test.sh            # everything
#   sudo bash scripts/test.sh ./proxy/   # some packages
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
ensure_packages

pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && pkgs=(./...)

echo "== go vet"
go vet "${pkgs[@]}"

if [ "$(id -u)" != 0 ]; then
	echo "== not root: integration tests will skip (they need namespaces with a uid range)"
fi
echo "== go test $(go version | cut -d' ' -f3) as uid $(id -u)"
go build -o /tmp/silo-proxy-testreport.$$ ./internal/testreport
trap 'rm -f /tmp/silo-proxy-testreport.$$' EXIT
set +e
go test -json -count=1 -timeout 25m "${pkgs[@]}" 2>&1 | /tmp/silo-proxy-testreport.$$
rc=${PIPESTATUS[1]}
set -e
exit "$rc"
