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
// that no login runs into connect_timeout on two cores.
const idleOpenConcurrency = 16

// idleRSS measures silo-proxy's resident memory per idle client session.
// A fresh proxy serves two silos, bench and idle, each allowed n/2
// sessions and started before the first measure; b.o.idle connections,
// half to each silo, complete their startup and SCRAM authentication and
// then sit idle. The figure is the growth of the proxy's VmRSS divided by
// the number of connections. Each connection also holds a backend in its
// silo; those are separate processes and not counted.
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
	ps, err := startProxy(b.o.proxyBin, cfg, filepath.Join(b.work, "proxy-idle.log"), b.proxyPort, b.adminPort)
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
	// One session through each silo first, so that code paths run once
	// (and their pages are resident) before the baseline is taken.
	for _, c := range []string{
		connString("127.0.0.1", b.proxyPort, benchSilo, b.sf.password),
		connString("127.0.0.1", b.proxyPort, idleSilo, idleFiles.password),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := ping(ctx, c)
		cancel()
		if err != nil {
			return err
		}
	}
	time.Sleep(time.Second)
	before, err := readProcStatus(ps.pid())
	if err != nil {
		return err
	}
	fdsBefore := countFDs(ps.pid())

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
			break // the proxy refuses more: measure what is open
		}
		conn := connString("127.0.0.1", b.proxyPort, benchSilo, b.sf.password)
		if i%2 == 1 {
			conn = connString("127.0.0.1", b.proxyPort, idleSilo, idleFiles.password)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := pgconn.Connect(ctx, conn)
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
			progress("idle connections: %d opened", i+1)
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
		return firstErr
	}
	if firstErr != nil {
		progress("idle connections: only %d of %d opened (%d failed): %v", open, n, failed, firstErr)
	}
	// Let the sessions settle (goroutines parked, buffers returned).
	time.Sleep(3 * time.Second)
	after, err := readProcStatus(ps.pid())
	if err != nil {
		return err
	}
	fdsAfter := countFDs(ps.pid())
	ir := &idleResult{
		Connections:   n,
		Silos:         2,
		OpenSeconds:   openTime.Seconds(),
		RSSBeforeKiB:  before.VmRSS,
		RSSAfterKiB:   after.VmRSS,
		AnonBeforeKiB: before.RssAnon,
		AnonAfterKiB:  after.RssAnon,
		ThreadsAfter:  after.Threads,
		FDsBefore:     fdsBefore,
		FDsAfter:      fdsAfter,
		PerConnBytes:  float64(after.VmRSS-before.VmRSS) * 1024 / float64(n),
		PerConnAnonB:  float64(after.RssAnon-before.RssAnon) * 1024 / float64(n),
		FDsPerConn:    float64(fdsAfter-fdsBefore) / float64(n),
	}
	b.res.Idle = ir
	progress("idle connections: %d open in %.1f s; proxy VmRSS %d -> %d KiB: %.1f KiB per connection; %.1f fds per connection",
		open, ir.OpenSeconds, before.VmRSS, after.VmRSS, ir.PerConnBytes/1024, ir.FDsPerConn)
	return nil
}

// fdLimit returns the soft RLIMIT_NOFILE of pid, -1 when unknown.
func fdLimit(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(l, "Max open files"))
			if len(f) > 0 {
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
