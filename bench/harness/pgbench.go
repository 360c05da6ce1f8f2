package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// point is one pgbench configuration: the select-only script (-S) in a
// query mode at a number of clients; mode "connect" is -S with a new
// connection per transaction (-C), in the simple query mode.
type point struct {
	Mode    string `json:"mode"` // simple | prepared | connect
	Clients int    `json:"clients"`
}

func (p point) key() string { return fmt.Sprintf("%s/%d", p.Mode, p.Clients) }

func (p point) label() string {
	if p.Mode == "connect" {
		return fmt.Sprintf("-C c=%d", p.Clients)
	}
	return fmt.Sprintf("%s c=%d", p.Mode, p.Clients)
}

// threads is pgbench's -j: one thread per client up to the two cores of
// the machine the issue measured on; -C runs a thread per client, since
// each thread opens its connections one after another.
func (p point) threads() int {
	if p.Mode == "connect" {
		return p.Clients
	}
	return min(p.Clients, 2)
}

// target is a way to reach the bench database: host is a TCP address or a
// socket directory.
type target struct {
	Name string
	Host string
	Port int
	// pid, when set, is the process between pgbench and the postmaster
	// (silo-proxy, PgBouncer, an experimental relay) whose CPU time per
	// transaction is reported.
	pid func() int
}

// sample is one pgbench run.
type sample struct {
	TPS       float64 `json:"tps"`
	LatencyMS float64 `json:"latency_ms"`
	Tx        int64   `json:"transactions"`
	// CPUPerTxUS is the CPU time the middle process used per transaction,
	// in microseconds; 0 when the target has none.
	CPUPerTxUS float64 `json:"cpu_per_tx_us,omitempty"`
	Failed     string  `json:"failed,omitempty"`
}

var (
	reTPS     = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	reLatency = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	reTx      = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	reFailed  = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// runPgbench runs pgbench on t for d. Errors of pgbench itself (a client
// that lost its connection) fail the sample, not the run.
func runPgbench(t target, p point, d time.Duration, db, password string) sample {
	args := []string{"-n", "-S", "-c", fmt.Sprint(p.Clients), "-j", fmt.Sprint(p.threads()),
		"-T", fmt.Sprint(max(1, int(d.Round(time.Second)/time.Second))),
		"-h", t.Host, "-p", fmt.Sprint(t.Port), "-U", superuser}
	switch p.Mode {
	case "prepared":
		args = append(args, "-M", "prepared")
	case "connect":
		args = append(args, "-C")
	}
	args = append(args, db)
	cmd := exec.Command("pgbench", args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE=disable", "PGGSSENCMODE=disable")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out

	var pid int
	var cpu0 time.Duration
	if t.pid != nil {
		pid = t.pid()
		cpu0, _ = cpuTime(pid)
	}
	err := cmd.Run()
	var cpu1 time.Duration
	if pid != 0 {
		cpu1, _ = cpuTime(pid)
	}
	var s sample
	text := out.String()
	if m := reTPS.FindStringSubmatch(text); m != nil {
		s.TPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reLatency.FindStringSubmatch(text); m != nil {
		s.LatencyMS, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := reTx.FindStringSubmatch(text); m != nil {
		s.Tx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reFailed.FindStringSubmatch(text); m != nil && m[1] != "0" {
		s.Failed = "failed transactions: " + m[1]
	}
	if pid != 0 && s.Tx > 0 {
		s.CPUPerTxUS = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(s.Tx)
	}
	if err != nil || s.TPS == 0 {
		s.Failed = strings.TrimSpace(fmt.Sprintf("pgbench: %v: %s", err, lastLines(text, 5)))
	}
	return s
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// pgbenchInit creates the pgbench tables at scale.
func pgbenchInit(host string, port, scale int, db, password string) error {
	cmd := exec.Command("pgbench", "-i", "-q", "-s", fmt.Sprint(scale), "-h", host, "-p", fmt.Sprint(port), "-U", superuser, db)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	return nil
}
