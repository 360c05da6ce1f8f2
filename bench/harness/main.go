// Command silo-bench measures silo-proxy against a plain postmaster and
// against PgBouncer, on one data directory, on one machine, in one run.
// bench/run.sh (make bench) builds and runs it; bench/README.md explains
// the method and every number it prints.
//
// The data directory is the one silo-proxy bootstraps for the silo
// "bench". A postmaster can serve it only once at a time, so every round
// has two phases, in alternating order:
//
//   - plain: the silo is stopped and the harness starts the same postgres
//     binary on the same data directory as the silo's host uid, with the
//     same settings and a TCP listener: the "direct" target;
//   - silo: the silo runs under silo-proxy; PgBouncer (session mode) and
//     any experimental relays are put in front of the same silo's socket,
//     and each measurement point runs on every target of the phase back
//     to back, in an order that rotates from point to point and round to
//     round.
//
// Ratios and added latencies are computed per round and reported as the
// median over the rounds.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	proxyBin     string
	pgbouncerBin string
	relayBin     string
	relays       string
	bindir       string
	rounds       int
	duration     time.Duration
	warmup       time.Duration
	scale        int
	clients      string
	points       string
	connClients  int
	cold         int
	idle         int
	diag         bool
	out          string
	workdir      string
	keep         bool
	skip         string
	report       string
	profile      string
	proxyEnv     multiFlag
	cpuShares    int
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var o options
	flag.StringVar(&o.proxyBin, "proxy", "bin/silo-proxy", "silo-proxy binary")
	flag.StringVar(&o.pgbouncerBin, "pgbouncer", "", "PgBouncer binary (empty: PgBouncer targets are skipped)")
	flag.StringVar(&o.relayBin, "relay", "", "bench/experiments/relay binary, for -relays")
	flag.StringVar(&o.relays, "relays", "", "experimental relay variants to measure next to the proxy: MODE[/GOMAXPROCS],... with MODE splice, rw or epoll")
	flag.StringVar(&o.bindir, "bindir", "", "PostgreSQL bindir (default: pg_config --bindir, else the newest /usr/lib/postgresql/*/bin)")
	flag.IntVar(&o.rounds, "rounds", 4, "interleaved rounds")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "pgbench -T of each point (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "pgbench warm-up after each postmaster start")
	flag.IntVar(&o.scale, "scale", 10, "pgbench scale")
	flag.StringVar(&o.clients, "clients", "1,8,32", "client counts of the -S points")
	flag.StringVar(&o.points, "points", "", "only these points, e.g. simple/8,connect/4 (default: all)")
	flag.IntVar(&o.connClients, "connect-clients", 4, "clients of the -C point")
	flag.IntVar(&o.cold, "cold", 20, "cold starts of each kind")
	flag.IntVar(&o.idle, "idle", 5000, "idle client connections of the RSS test (0 skips it)")
	flag.BoolVar(&o.diag, "diag", true, "also run pgbench on the silo's and the plain postmaster's Unix sockets (simple, 1 and 8 clients)")
	flag.StringVar(&o.out, "out", "bench", "directory for results.json, results.txt and results.png")
	flag.StringVar(&o.workdir, "workdir", "", "work directory (default: a new /tmp/silo-bench.*)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.StringVar(&o.skip, "skip", "", "phases to skip: any of pgbench,cold,idle")
	flag.Var(&o.proxyEnv, "proxy-env", "NAME=VALUE added to silo-proxy's environment, e.g. GOMAXPROCS=1 (repeatable)")
	flag.IntVar(&o.cpuShares, "silo-cpu-shares", 0, "experiment: after each silo start, give the silo's cpu cgroup (and the silo-proxy cgroup above it) this cgroup v1 cpu.shares (v2: the matching cpu.weight); 0 leaves the spawner's")
	flag.StringVar(&o.report, "report", "", "print the table of this results.json and render its chart next to it, then exit")
	flag.StringVar(&o.profile, "profile", "", "instead of the benchmark, profile the middle processes at pgbench -S -c 8 and write the results to this directory")
	flag.Parse()
	if o.profile != "" {
		err := profileRun(o, o.profile)
		stopAll()
		if err != nil {
			fmt.Fprintln(os.Stderr, "silo-bench:", err)
			os.Exit(1)
		}
		return
	}
	if o.report != "" {
		if err := replot(o.report); err != nil {
			fmt.Fprintln(os.Stderr, "silo-bench:", err)
			os.Exit(1)
		}
		return
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nsilo-bench: %v: stopping what was started\n", s)
		stopAll()
		os.Exit(130)
	}()

	code := 0
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "silo-bench:", err)
		code = 1
	}
	stopAll()
	os.Exit(code)
}

func (o options) skips(phase string) bool {
	for _, s := range strings.Split(o.skip, ",") {
		if strings.TrimSpace(s) == phase {
			return true
		}
	}
	return false
}

// pointList returns the measurement points in their reporting order.
func (o options) pointList() ([]point, error) {
	var pts []point
	var cs []int
	for _, f := range strings.Split(o.clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-clients: %q", f)
		}
		cs = append(cs, n)
	}
	for _, m := range []string{"simple", "prepared"} {
		for _, c := range cs {
			pts = append(pts, point{Mode: m, Clients: c})
		}
	}
	pts = append(pts, point{Mode: "connect", Clients: o.connClients})
	if o.points == "" {
		return pts, nil
	}
	want := map[string]bool{}
	for _, f := range strings.Split(o.points, ",") {
		want[strings.TrimSpace(f)] = true
	}
	var sel []point
	for _, p := range pts {
		if want[p.key()] {
			sel = append(sel, p)
			delete(want, p.key())
		}
	}
	for k := range want {
		return nil, fmt.Errorf("-points: unknown point %q", k)
	}
	return sel, nil
}

// findBindir resolves the PostgreSQL bindir as postgres.bindir: auto does.
func findBindir() (string, error) {
	if out, err := runOutput("pg_config", "--bindir"); err == nil {
		d := strings.TrimSpace(out)
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	ds, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestV := "", -1
	for _, d := range ds {
		v, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil && v > bestV {
			best, bestV = d, v
		}
	}
	if best == "" {
		return "", fmt.Errorf("no PostgreSQL server installation found")
	}
	return best, nil
}
