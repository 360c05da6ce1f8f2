package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// idleOpenConcurrency is how many idle connections are being opened at
// any moment: enough to keep both silos' postmasters forking, few enough
// that no login runs into its timeout on two cores.
const idleOpenConcurrency = 16

// idleRSS measures silo-proxy's resident memory per idle client session.
// A fresh proxy serves two silos, bench and idle, each allowed n/2
// sessions and started before the first measure; b.o.idle connections,
// half to each silo, complete their startup and SCRAM authentication and
// then sit idle. The figure is the growth of the proxy's VmRSS divided by
// the number of connections. Each connection also holds a backend in its
// silo; those are separate processes and not counted. The experimental
// relays, if any, are measured the same way with n/2 connections to the
// bench silo.
func (b *bench) idleRSS() error {
	n := b.o.idle
	perSilo := (n + 1) / 2
	cfg := filepath.Join(b.work, "proxy-idle.yaml")
	err := writeProxyConfig(cfg, b.proxyPort, b.adminPort, b.bindir, b.state, filepath.Join(b.work, "roots"),
		perSilo+10, pgSettings(perSilo+20), []siloConf{{benchSilo, benchSilo}, {idleSilo, idleSilo}})
	if err != nil {
		return err
	}
	progress("idle connections: starting silo-proxy with silos %s and %s", benchSilo, idleSilo)
	ps, err := startProxy(b.o.proxyBin, cfg, filepath.Join(b.work, "proxy-idle.log"), b.proxyPort, b.adminPort, b.o.proxyEnv, false)
	if err != nil {
		return err
	}
	defer ps.stop(syscall.SIGTERM, 180*time.Second)
	for _, s := range []string{benchSilo, idleSilo} {
		if err := ps.startSilo(s); err != nil {
			return err
		}
	}
	idleFiles, err := readSiloFiles(b.state, idleSilo)
	if err != nil {
		return err
	}
	benchConn := connString("127.0.0.1", b.proxyPort, benchSilo, b.sf.password)
	idleConn := connString("127.0.0.1", b.proxyPort, idleSilo, idleFiles.password)
	ir, err := measureIdle("silo-proxy", ps.proc, n, func(i int) string {
		if i%2 == 1 {
			return idleConn
		}
		return benchConn
	})
	if err != nil {
		return err
	}
	ir.Silos = 2
	if ir.Error != "" {
		if l := grepLog(ps.log, "accept failed"); l != "" {
			ir.Error += "; proxy log: " + l
		}
	}
	b.res.Idle = ir

	for i, v := range b.variants {
		time.Sleep(2 * time.Second) // the previous sessions' backends exit
		conn := connString("127.0.0.1", b.relayPorts[i], benchSilo, b.sf.password)
		rs, err := startRelay(b.o.relayBin, b.work, v, b.relayPorts[i], filepath.Join(b.sf.runDir, ".s.PGSQL.5432"), conn)
		if err != nil {
			return err
		}
		rr, err := measureIdle(v.name, rs.proc, perSilo, func(int) string { return conn })
		rs.stop()
		if err != nil {
			return err
		}
		rr.Silos = 1
		if ir.Relays == nil {
			ir.Relays = map[string]*idleResult{}
		}
		ir.Relays[v.name] = rr
	}
	return nil
}

// measureIdle opens n connections (conn(i) says where the i-th goes)
// through the process p, keeps them idle while it reads p's memory and
// descriptors, then closes them. When p refuses connections it stops
// opening more and measures what is open.
func measureIdle(name string, p *proc, n int, conn func(i int) string) (*idleResult, error) {
	// One session first, so that code paths have run once (and their
	// pages are resident) before the baseline is taken.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := ping(ctx, conn(0))
	cancel()
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	before, err := readProcStatus(p.pid())
	if err != nil {
		return nil, err
	}
	fdsBefore := countFDs(p.pid())

	conns := make([]*pgconn.PgConn, n)
	sem := make(chan struct{}, idleOpenConcurrency)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		failed   int
	)
	t0 := time.Now()
	for i := range n {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			break // p refuses more: measure what is open
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := pgconn.Connect(ctx, conn(i))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = fmt.Errorf("connection %d: %w", i+1, err)
				}
				return
			}
			conns[i] = c
		}()
		if (i+1)%1000 == 0 {
			progress("idle connections through %s: %d opened", name, i+1)
		}
	}
	wg.Wait()
	openTime := time.Since(t0)
	defer func() {
		var cw sync.WaitGroup
		for _, c := range conns {
			if c != nil {
				cw.Add(1)
				go func() {
					defer cw.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c.Close(ctx)
				}()
			}
		}
		cw.Wait()
	}()
	open := 0
	for _, c := range conns {
		if c != nil {
			open++
		}
	}
	if open == 0 {
		return nil, firstErr
	}
	if firstErr != nil {
		progress("idle connections through %s: only %d of %d opened (%d failed): %v", name, open, n, failed, firstErr)
	}
	// Let the sessions settle (goroutines parked, buffers returned).
	time.Sleep(3 * time.Second)
	after, err := readProcStatus(p.pid())
	if err != nil {
		return nil, err
	}
	fdsAfter := countFDs(p.pid())
	ir := &idleResult{
		Requested:     n,
		Connections:   open,
		OpenSeconds:   openTime.Seconds(),
		RSSBeforeKiB:  before.VmRSS,
		RSSAfterKiB:   after.VmRSS,
		AnonBeforeKiB: before.RssAnon,
		AnonAfterKiB:  after.RssAnon,
		ThreadsAfter:  after.Threads,
		FDsBefore:     fdsBefore,
		FDsAfter:      fdsAfter,
		PerConnBytes:  float64(after.VmRSS-before.VmRSS) * 1024 / float64(open),
		PerConnAnonB:  float64(after.RssAnon-before.RssAnon) * 1024 / float64(open),
		FDsPerConn:    float64(fdsAfter-fdsBefore) / float64(open),
		FDLimit:       fdLimit(p.pid()),
	}
	if firstErr != nil {
		ir.Error = firstErr.Error()
	}
	progress("idle connections through %s: %d open in %.1f s; VmRSS %d -> %d KiB: %.1f KiB per connection; %.1f fds per connection",
		name, open, ir.OpenSeconds, before.VmRSS, after.VmRSS, ir.PerConnBytes/1024, ir.FDsPerConn)
	return ir, nil
}

// fdLimit returns the soft RLIMIT_NOFILE of pid, -1 when unknown.
func fdLimit(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					return n
				}
			}
		}
	}
	return -1
}

// grepLog returns the last line of a log that contains s.
func grepLog(path, s string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var last string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			last = l
		}
	}
	return strings.TrimSpace(last)
}
