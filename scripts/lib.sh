# Shared by the scripts in this directory: find Go and make sure the
# PostgreSQL server binaries, psql and pgbench exist, installing Debian's
# packages when they do not and we are root.

# Go from its usual install places even under sudo's secure_path.
for d in /usr/local/go/bin /usr/lib/go/bin "$HOME/go/bin"; do
	case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && PATH="$PATH:$d" ;; esac
done
export PATH

need_go() {
	if ! command -v go >/dev/null 2>&1; then
		echo "go not found: install Go 1.26 or newer (https://go.dev/dl/) and retry" >&2
		exit 1
	fi
}

# have_postgres succeeds when a PostgreSQL server installation is present,
# found the same way `postgres.bindir: auto` finds it.
have_postgres() {
	local bindir
	if command -v pg_config >/dev/null 2>&1; then
		bindir=$(pg_config --bindir 2>/dev/null || true)
		[ -n "$bindir" ] && [ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] && return 0
	fi
	for bindir in /usr/lib/postgresql/*/bin; do
		[ -x "$bindir/postgres" ] && [ -x "$bindir/initdb" ] && return 0
	done
	return 1
}

# ensure_packages installs what the proxy and its tests use: the PostgreSQL
# server (initdb, postgres), its clients (psql, pgbench, pg_isready) and
# iproute2 (`ip`, used inside standard-layout silos by the tests).
ensure_packages() {
	local missing=()
	have_postgres || missing+=(postgresql)
	command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
	command -v pgbench >/dev/null 2>&1 || missing+=(postgresql)
	command -v ip >/dev/null 2>&1 || missing+=(iproute2)
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		echo "missing: ${missing[*]}; run this script as root (sudo) to install them with apt-get" >&2
		return 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "missing: ${missing[*]}; no apt-get here, install them with your package manager" >&2
		return 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
	have_postgres || { echo "PostgreSQL server binaries still not found after install" >&2; return 1; }
}

# build_bench builds bin/silo-bench (the benchmark harness) and sets PROXY
# to the silo-proxy binary to measure: $SILO_PROXY when given, else a
# fresh bin/silo-proxy built from this tree.
build_bench() {
	mkdir -p bin
	if [ -n "${SILO_PROXY:-}" ]; then
		PROXY=$SILO_PROXY
	else
		go build -o bin/silo-proxy ./cmd/silo-proxy
		PROXY=bin/silo-proxy
	fi
	go build -o bin/silo-bench ./bench/harness
}
