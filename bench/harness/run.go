package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// bench is the state of one run.
type bench struct {
	o        options
	pts      []point
	variants []relayVariant
	work     string
	bindir   string
	state    string
	proxy    *proxyServer
	sf       siloFiles
	secret   string // the superuser's SCRAM secret, for PgBouncer
	res      *results

	proxyPort, adminPort, plainPort, pgbPort int
	relayPorts                               []int
}

// Settings of the silo during the pgbench and cold-start phases.
const (
	benchMaxConnections = 200
	benchMaxClients     = 200
)

func run(o options) error {
	b := &bench{o: o}
	var err error
	if b.pts, err = o.pointList(); err != nil {
		return err
	}
	if o.relays != "" {
		if o.relayBin == "" {
			return fmt.Errorf("-relays needs -relay")
		}
		if b.variants, err = parseRelayVariants(o.relays); err != nil {
			return err
		}
	}
	if o.bindir != "" {
		b.bindir = o.bindir
	} else if b.bindir, err = findBindir(); err != nil {
		return err
	}
	if o.proxyBin, err = filepath.Abs(o.proxyBin); err != nil {
		return err
	}
	if out, err := runOutput(o.proxyBin, "run", "-h"); err != nil && strings.Contains(out, "unknown command") {
		return fmt.Errorf("%s has no run command: build silo-proxy from a tree that has it", o.proxyBin)
	}
	if o.pgbouncerBin == "" {
		fmt.Fprintln(os.Stderr, "silo-bench: no PgBouncer: its targets are skipped")
	}

	b.work = o.workdir
	if b.work == "" {
		if b.work, err = os.MkdirTemp("", "silo-bench."); err != nil {
			return err
		}
	} else if err := os.MkdirAll(b.work, 0o755); err != nil {
		return err
	}
	// Silo uids traverse the work directory to reach their state.
	if err := os.Chmod(b.work, 0o755); err != nil {
		return err
	}
	if !o.keep {
		defer func() {
			stopAll()
			os.RemoveAll(b.work)
		}()
	} else {
		defer fmt.Fprintf(os.Stderr, "silo-bench: work directory kept: %s\n", b.work)
	}
	b.state = filepath.Join(b.work, "state")
	if err := b.pickPorts(); err != nil {
		return err
	}
	b.res = newResults(o, b)

	if err := b.setup(); err != nil {
		return err
	}
	if !o.skips("pgbench") {
		for r := range o.rounds {
			phases := []string{"plain", "silo"}
			if r%2 == 1 {
				phases = []string{"silo", "plain"}
			}
			for _, ph := range phases {
				if err := b.phase(ph, r); err != nil {
					return fmt.Errorf("round %d, %s phase: %w", r+1, ph, err)
				}
			}
		}
	}
	if !o.skips("cold") && o.cold > 0 {
		// Restart the proxy logging at debug level, for the spawner's
		// breakdown of every silo start.
		b.proxy.stop(syscall.SIGTERM, 120*time.Second)
		if b.proxy, err = startProxy(o.proxyBin, b.proxy.config, filepath.Join(b.work, "proxy-cold.log"),
			b.proxyPort, b.adminPort, o.proxyEnv, true); err != nil {
			return err
		}
		if err := b.coldStarts(); err != nil {
			return fmt.Errorf("cold starts: %w", err)
		}
	}
	b.proxy.stop(syscall.SIGTERM, 120*time.Second)
	if !o.skips("idle") && o.idle > 0 {
		if err := b.idleRSS(); err != nil {
			return fmt.Errorf("idle connections: %w", err)
		}
	}
	return b.res.write(o.out, b.work)
}

// pickPorts picks free ports for every server the bench starts.
func (b *bench) pickPorts() (err error) {
	for _, p := range []*int{&b.proxyPort, &b.adminPort, &b.plainPort, &b.pgbPort} {
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	for range b.variants {
		port, err := freePort()
		if err != nil {
			return err
		}
		b.relayPorts = append(b.relayPorts, port)
	}
	return nil
}

// setup starts silo-proxy, lets it bootstrap the bench silo (initdb and
// CREATE DATABASE run inside the silo), fills it with pgbench's tables
// through the silo's socket, and stops the silo again.
func (b *bench) setup() error {
	cfg := filepath.Join(b.work, "proxy.yaml")
	err := writeProxyConfig(cfg, b.proxyPort, b.adminPort, b.bindir, b.state, filepath.Join(b.work, "roots"),
		benchMaxClients, pgSettings(benchMaxConnections), []siloConf{{benchSilo, benchSilo}})
	if err != nil {
		return err
	}
	progress("starting silo-proxy and bootstrapping silo %s", benchSilo)
	if b.proxy, err = startProxy(b.o.proxyBin, cfg, filepath.Join(b.work, "proxy.log"), b.proxyPort, b.adminPort, b.o.proxyEnv, false); err != nil {
		return err
	}
	if err := b.proxy.startSilo(benchSilo); err != nil {
		return fmt.Errorf("%w\n%s", err, logTail(b.proxy.log, 20))
	}
	if b.sf, err = readSiloFiles(b.state, benchSilo); err != nil {
		return err
	}
	progress("pgbench -i -s %d", b.o.scale)
	if err := pgbenchInit(b.sf.runDir, 5432, b.o.scale, benchSilo, b.sf.password); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sock := connString(b.sf.runDir, 5432, benchSilo, b.sf.password)
	if err := execSQL(ctx, sock, "CREATE EXTENSION IF NOT EXISTS pg_prewarm"); err != nil {
		progress("pg_prewarm not available (%v): warm-up by pgbench only", err)
	}
	for _, sql := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if err := execSQL(ctx, sock, sql); err != nil {
			return err
		}
	}
	if b.secret, err = querySecret(ctx, sock); err != nil {
		return err
	}
	if err := writePlainFiles(filepath.Join(b.work, "plain"), b.sf); err != nil {
		return err
	}
	return b.proxy.stopSilo(benchSilo)
}

// phase runs every point of one round on the targets of one phase.
func (b *bench) phase(ph string, r int) error {
	var targets, diag []target
	var warm target
	switch ph {
	case "plain":
		plain, err := startPlain(b.bindir, filepath.Join(b.work, "plain"), b.sf, b.plainPort, pgSettings(benchMaxConnections))
		if err != nil {
			return err
		}
		defer plain.stop()
		direct := target{Name: "direct", Host: "127.0.0.1", Port: b.plainPort}
		targets = []target{direct}
		diag = []target{{Name: "direct-unix", Host: plain.sockDir, Port: b.plainPort}}
		warm = direct
	case "silo":
		if err := b.proxy.startSilo(benchSilo); err != nil {
			return err
		}
		if b.o.cpuShares > 0 {
			if err := b.setSiloCPUWeight(b.o.cpuShares); err != nil {
				return fmt.Errorf("-silo-cpu-shares: %w", err)
			}
		}
		// Deferred calls run last-in first-out: PgBouncer and the relays
		// go first, so the smart stop finds no sessions left.
		defer func() {
			if err := b.proxy.stopSilo(benchSilo); err != nil {
				progress("stopping silo: %v", err)
			}
		}()
		proxy := target{Name: "proxy", Host: "127.0.0.1", Port: b.proxyPort, pid: b.proxy.pid}
		targets = []target{proxy}
		if b.o.pgbouncerBin != "" {
			pb, err := startPgbouncer(b.o.pgbouncerBin, filepath.Join(b.work, "pgbouncer"), b.pgbPort, b.sf.runDir, 5432, b.sf, b.secret)
			if err != nil {
				return err
			}
			defer pb.stop()
			targets = append(targets, target{Name: "pgbouncer", Host: "127.0.0.1", Port: b.pgbPort, pid: pb.pid})
		}
		for i, v := range b.variants {
			conn := connString("127.0.0.1", b.relayPorts[i], benchSilo, b.sf.password)
			rs, err := startRelay(b.o.relayBin, b.work, v, b.relayPorts[i], filepath.Join(b.sf.runDir, ".s.PGSQL.5432"), conn)
			if err != nil {
				return err
			}
			defer rs.stop()
			targets = append(targets, target{Name: v.name, Host: "127.0.0.1", Port: b.relayPorts[i], pid: rs.pid})
		}
		diag = []target{{Name: "silo-unix", Host: b.sf.runDir, Port: 5432}}
		warm = proxy
	}
	b.warm(warm)
	for i, p := range b.pts {
		n := len(targets)
		for j := range n {
			t := targets[(j+r+i)%n]
			b.record(r, t, p)
		}
		if b.o.diag && p.Mode == "simple" && (p.Clients == 1 || p.Clients == 8) {
			for _, t := range diag {
				b.record(r, t, p)
			}
		}
	}
	return nil
}

func (b *bench) record(r int, t target, p point) {
	s := runPgbench(t, p, b.o.duration, benchSilo, b.sf.password)
	b.res.add(t.Name, p, r, s)
	if s.Failed != "" {
		progress("round %d/%d %-13s %-14s FAILED: %s", r+1, b.o.rounds, t.Name, p.label(), s.Failed)
		return
	}
	cpu := ""
	if s.CPUPerTxUS > 0 {
		cpu = fmt.Sprintf("  %5.1f µs CPU/tx", s.CPUPerTxUS)
	}
	progress("round %d/%d %-13s %-14s %8.0f tps %7.3f ms%s", r+1, b.o.rounds, t.Name, p.label(), s.TPS, s.LatencyMS, cpu)
}

// warm loads the pgbench tables into shared buffers (pg_prewarm, when the
// silo could create the extension) and runs pgbench for the warm-up time,
// so that no target pays for a cold cache after a postmaster start.
func (b *bench) warm(t target) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	execSQL(ctx, connString(t.Host, t.Port, benchSilo, b.sf.password),
		"SELECT pg_prewarm('pgbench_accounts'), pg_prewarm('pgbench_accounts_pkey')")
	if b.o.warmup > 0 {
		runPgbench(t, point{Mode: "simple", Clients: 8}, b.o.warmup, benchSilo, b.sf.password)
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func runOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
