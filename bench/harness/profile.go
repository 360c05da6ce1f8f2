package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// profileRun starts the silo phase (silo-proxy, PgBouncer and the
// experimental relays in front of the running silo) and, for every middle
// process, runs pgbench -S at 8 clients (or the first of -points) three
// times: under strace -c -f
// (system calls per transaction, by call), under perf stat with software
// events (CPU time, context switches and migrations per transaction), and
// under perf record -g (where the CPU time goes). Everything goes to dir;
// summary.txt holds the per-transaction table.
func profileRun(o options, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b := &bench{o: o}
	var err error
	if b.bindir = o.bindir; b.bindir == "" {
		if b.bindir, err = findBindir(); err != nil {
			return err
		}
	}
	if b.variants, err = parseRelayVariants(o.relays); err != nil {
		return err
	}
	if b.o.proxyBin, err = filepath.Abs(o.proxyBin); err != nil {
		return err
	}
	if b.work, err = os.MkdirTemp("", "silo-bench."); err != nil {
		return err
	}
	os.Chmod(b.work, 0o755)
	defer func() {
		stopAll()
		if !o.keep {
			os.RemoveAll(b.work)
		}
	}()
	b.state = filepath.Join(b.work, "state")
	if err := b.pickPorts(); err != nil {
		return err
	}
	b.res = newResults(o, b)
	if err := b.setup(); err != nil {
		return err
	}
	if err := b.proxy.startSilo(benchSilo); err != nil {
		return err
	}
	targets := []target{{Name: "proxy", Host: "127.0.0.1", Port: b.proxyPort, pid: b.proxy.pid}}
	if o.pgbouncerBin != "" {
		pb, err := startPgbouncer(o.pgbouncerBin, filepath.Join(b.work, "pgbouncer"), b.pgbPort, b.sf.runDir, 5432, b.sf, b.secret)
		if err != nil {
			return err
		}
		targets = append(targets, target{Name: "pgbouncer", Host: "127.0.0.1", Port: b.pgbPort, pid: pb.pid})
	}
	for i, v := range b.variants {
		conn := connString("127.0.0.1", b.relayPorts[i], benchSilo, b.sf.password)
		rs, err := startRelay(o.relayBin, b.work, v, b.relayPorts[i], filepath.Join(b.sf.runDir, ".s.PGSQL.5432"), conn)
		if err != nil {
			return err
		}
		targets = append(targets, target{Name: v.name, Host: "127.0.0.1", Port: b.relayPorts[i], pid: rs.pid})
	}
	b.warm(targets[0])
	p := point{Mode: "simple", Clients: 8}
	if o.points != "" {
		pts, err := o.pointList()
		if err != nil {
			return err
		}
		p = pts[0]
	}
	var summary strings.Builder
	fmt.Fprintf(&summary, "pgbench -S %s, %s per measure; figures per transaction of the middle process\n", p.label(), o.duration)
	fmt.Fprintf(&summary, "%s, load average at start %s\n\n", time.Now().UTC().Format(time.RFC3339), loadavg())
	fmt.Fprintf(&summary, "%-16s %9s %9s %9s %9s %9s  %s\n", "target", "tps", "CPU µs", "ctx-sw", "migr", "syscalls", "syscalls per tx (strace -c -f; tps under strace)")
	for _, t := range targets {
		progress("profiling %s", t.Name)
		b.warm(t)
		st, err := straceCount(t, p, o.duration, b.sf.password, filepath.Join(dir, t.Name+"-strace.txt"))
		if err != nil {
			return err
		}
		ps, err := perfStat(t, p, o.duration, b.sf.password, filepath.Join(dir, t.Name+"-perfstat.txt"))
		if err != nil {
			return err
		}
		if err := perfRecord(t, p, o.duration, b.sf.password, filepath.Join(dir, t.Name+"-perf.txt")); err != nil {
			return err
		}
		var calls []string
		for _, c := range st.calls {
			if c.perTx >= 0.05 {
				calls = append(calls, fmt.Sprintf("%s %.2f", c.name, c.perTx))
			}
		}
		fmt.Fprintf(&summary, "%-16s %9.0f %9.1f %9.2f %9.3f %9.2f  %s (%.0f tps)\n", t.Name, ps.tps, ps.cpuUS, ps.ctxSw, ps.migr,
			st.total, strings.Join(calls, ", "), st.tps)
	}
	fmt.Print(summary.String())
	return os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(summary.String()), 0o644)
}

type syscallCount struct {
	name  string
	perTx float64
}

type straceResult struct {
	tps, total float64
	calls      []syscallCount
}

var reStraceLine = regexp.MustCompile(`^\s*[0-9.]+\s+[0-9.]+\s+[0-9]+\s+([0-9]+)\s+(?:[0-9]+\s+)?(\w+)\s*$`)

// pgbenchUnder starts tool (named name in errors), which attaches to t's
// middle process, gives it settle to attach, runs pgbench on t and stops
// the tool with SIGINT, so that it writes what it recorded.
func pgbenchUnder(name string, tool *exec.Cmd, settle time.Duration, t target, p point, d time.Duration, password string) (sample, error) {
	if err := tool.Start(); err != nil {
		return sample{}, fmt.Errorf("%s: %w", name, err)
	}
	time.Sleep(settle)
	s := runPgbench(t, p, d, benchSilo, password)
	tool.Process.Signal(syscall.SIGINT)
	tool.Wait()
	return s, nil
}

// straceCount counts the system calls of t's middle process, all threads,
// during one pgbench run.
func straceCount(t target, p point, d time.Duration, password, out string) (straceResult, error) {
	var r straceResult
	cmd := exec.Command("strace", "-c", "-f", "-p", strconv.Itoa(t.pid()), "-o", out)
	s, err := pgbenchUnder("strace", cmd, 500*time.Millisecond, t, p, d, password)
	if err != nil {
		return r, err
	}
	if s.Failed != "" {
		return r, fmt.Errorf("pgbench under strace: %s", s.Failed)
	}
	r.tps = s.TPS
	text, err := os.ReadFile(out)
	if err != nil {
		return r, err
	}
	for _, line := range strings.Split(string(text), "\n") {
		m := reStraceLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, _ := strconv.ParseFloat(m[1], 64)
		if m[2] == "total" {
			r.total = n / float64(s.Tx)
			continue
		}
		r.calls = append(r.calls, syscallCount{name: m[2], perTx: n / float64(s.Tx)})
	}
	sort.Slice(r.calls, func(i, j int) bool { return r.calls[i].perTx > r.calls[j].perTx })
	return r, nil
}

type perfStatResult struct {
	tps, cpuUS, ctxSw, migr float64
}

// perfStat reads software counters of the middle process during one
// pgbench run (hardware counters are not available on every machine).
func perfStat(t target, p point, d time.Duration, password, out string) (perfStatResult, error) {
	var r perfStatResult
	cmd := exec.Command("perf", "stat", "-x", ",", "-e", "task-clock,context-switches,cpu-migrations",
		"-p", strconv.Itoa(t.pid()), "-o", out)
	s, err := pgbenchUnder("perf stat", cmd, 300*time.Millisecond, t, p, d, password)
	if err != nil {
		return r, err
	}
	if s.Failed != "" {
		return r, fmt.Errorf("pgbench under perf stat: %s", s.Failed)
	}
	r.tps = s.TPS
	text, err := os.ReadFile(out)
	if err != nil {
		return r, err
	}
	// The counters include the moments before and after pgbench; those
	// are idle, so dividing by the transactions is fair.
	for _, line := range strings.Split(string(text), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(f[2], "task-clock"):
			r.cpuUS = v * 1000 / float64(s.Tx) // msec
		case strings.HasPrefix(f[2], "context-switches"):
			r.ctxSw = v / float64(s.Tx)
		case strings.HasPrefix(f[2], "cpu-migrations"):
			r.migr = v / float64(s.Tx)
		}
	}
	return r, nil
}

// perfRecord samples the middle process's stacks (cpu-clock, which works
// without hardware counters) and writes perf report's self and inclusive
// (children) views by symbol. Under a hypervisor without a PMU, cpu-clock
// samples land where interrupts are re-enabled, so self time gathers in
// finish_task_switch and _raw_spin_unlock_irqrestore; the inclusive view
// still says which call paths the time is spent under.
func perfRecord(t target, p point, d time.Duration, password, out string) error {
	data := out + ".data"
	defer os.Remove(data)
	cmd := exec.Command("perf", "record", "-e", "cpu-clock", "-F", "2000", "-g", "-p", strconv.Itoa(t.pid()), "-o", data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if _, err := pgbenchUnder("perf record", cmd, 300*time.Millisecond, t, p, d, password); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	flat, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "-g", "none", "--percent-limit", "0.7").CombinedOutput()
	if err != nil {
		return fmt.Errorf("perf report: %v: %s %s", err, flat, stderr.String())
	}
	incl, _ := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "2").CombinedOutput()
	return os.WriteFile(out, append(append(flat, "\n\n==== inclusive (children) ====\n"...), incl...), 0o644)
}
