#!/usr/bin/env bash
# Builds silo-proxy and runs it on config.example.yaml: a catch-all silo and
# an `app` silo, state under ./.silo-state. Installs PostgreSQL if missing.
# Extra arguments go to `silo-proxy run` (e.g. --log-level debug).
#
#   sudo bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_go
ensure_packages
mkdir -p bin
go build -o bin/silo-proxy ./cmd/silo-proxy
if [ "$(id -u)" != 0 ]; then
	echo "not root: silos run in rootless mode (see 'bin/silo-proxy check --config config.example.yaml')" >&2
fi
exec bin/silo-proxy run --config config.example.yaml "$@"
