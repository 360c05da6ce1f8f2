package integration

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// coldStartRounds is how many starts of each kind TestColdStartTimes times
// by default; SILO_COLDSTART_ROUNDS overrides it (use 50 or more for a
// p99 that is not just the maximum).
const coldStartRounds = 10

// TestColdStartTimes measures a silo's cold start (a stopped silo with an
// existing data directory, from Acquire until the lease: the postmaster
// started, its socket accepting a startup packet, databases checked) in
// two forms, a parked silo (the default: its sandbox built ahead, see
// docs/silos.md) and one with parking off (namespaces, root, cgroup and
// privileges built on the start's path), next to a plain postmaster start
// of the parked silo's data directory outside any sandbox (from exec until
// its socket answers a startup packet with an authentication request),
// interleaved in one run. Each start begins once the background work of
// the previous ones (parking) is over. It logs the numbers; timings on a
// shared machine are never asserted.
func TestColdStartTimes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("timing run skipped in -short mode")
	}
	rounds := coldStartRounds
	if v := os.Getenv("SILO_COLDSTART_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SILO_COLDSTART_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	e := newEnv(t)
	cfg := e.Config(Silo("cold", []string{"cold"}))
	m := e.startManager(cfg, nil)
	eu := newEnv(t)
	cfgu := eu.Config(Silo("cold", []string{"cold"}))
	mu := eu.startManagerOpts(cfgu, spawner.Options{NoParking: true})
	ctx := context.Background()
	startAll(t, m, "cold")
	startAll(t, mu, "cold")
	parks := 0
	stop := func(m *spawner.Manager, parked bool) {
		t.Helper()
		if err := m.Stop(ctx, "cold", spawner.StopFast); err != nil {
			t.Fatal(err)
		}
		if parked {
			parks++
			eventually(t, 60*time.Second, "the silo parked", func() bool {
				return strings.Count(e.Log.String(), `msg="silo parked" silo=cold`) >= parks
			})
		}
	}
	stop(m, true)
	stop(mu, false)
	data := cfg.Paths("cold").Data
	siloUID := idRange(t, cfg, "cold").HostUID(fslayout.PostgresUID)
	const nobody = 65534
	plainRun := e.MkdirShared("plain-run")
	if err := os.Chown(plainRun, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	coldStart := func(m *spawner.Manager, parked bool) time.Duration {
		t.Helper()
		begin := time.Now()
		lease, err := m.Acquire(ctx, "cold")
		took := time.Since(begin)
		if err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		if !lease.ColdStart {
			t.Fatal("the lease is not a cold start")
		}
		lease.Release()
		stop(m, parked)
		return took
	}

	var parked, unparked, plain []time.Duration
	for range rounds {
		parked = append(parked, coldStart(m, true))
		unparked = append(unparked, coldStart(mu, false))
		chownTree(t, data, nobody)
		plain = append(plain, plainStart(t, e.Install, data, plainRun, nobody))
		chownTree(t, data, siloUID)
	}
	if n := strings.Count(e.Log.String(), `msg="silo start phases" silo=cold prepare`); n == 0 {
		t.Error("no start phases logged")
	}
	if strings.Contains(e.Log.String(), "discarding the parked sandbox") {
		t.Errorf("a parked sandbox was discarded during the run:\n%s", e.Log.String())
	}
	row := func(what string, d []time.Duration) {
		t.Logf("  %-34s p50 %7.2fms  p99 %7.2fms  min %7.2fms  max %7.2fms", what,
			ms(median(d)), ms(percentile(d, 0.99)), ms(slices.Min(d)), ms(slices.Max(d)))
	}
	t.Logf("cold start over %d rounds, interleaved:", rounds)
	row("silo, parked (default):", parked)
	row("silo, parking off:", unparked)
	row("plain postgres, same data dir:", plain)
	t.Logf("  ratio to plain (p50): parked %.2f, parking off %.2f",
		float64(median(parked))/float64(median(plain)), float64(median(unparked))/float64(median(plain)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the nearest-rank percentile p (0 < p ≤ 1) of d.
func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// chownTree gives every file below dir to uid (and the same gid).
func chownTree(t testing.TB, dir string, uid int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// plainStart starts the installation's postgres on data as uid, the way a
// distribution's service would (no namespaces, no mount plan), times it
// until the socket in runDir answers a startup packet with an
// authentication request, then stops it (fast) and waits for it.
func plainStart(t testing.TB, inst fslayout.Install, data, runDir string, uid int) time.Duration {
	t.Helper()
	var logs bytes.Buffer
	cmd := exec.Command(inst.Postmaster(), "-D", data, "-c", "cluster_name=cold",
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+runDir, "-c", "port=5432")
	cmd.Env = []string{"PATH=" + inst.BinDir + ":/usr/bin:/bin", "LC_ALL=C"}
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	sock := filepath.Join(runDir, ".s.PGSQL.5432")
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		if startupAnswered(sock) {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("plain postgres exited: %v\n%s", err, logs.String())
		case <-time.After(time.Millisecond):
		}
		if time.Since(begin) > time.Minute {
			cmd.Process.Kill()
			t.Fatalf("plain postgres not ready after a minute:\n%s", logs.String())
		}
	}
	took := time.Since(begin)
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("plain postgres did not stop:\n%s", logs.String())
	}
	return took
}

// startupAnswered reports whether the server behind sock answers a
// StartupMessage with an authentication request.
func startupAnswered(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	buf, err := (&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": "postgres", "database": "postgres"},
	}).Encode(nil)
	if err != nil {
		panic(fmt.Sprintf("encoding a startup message: %v", err))
	}
	if _, err := c.Write(buf); err != nil {
		return false
	}
	msg, err := pgproto3.NewFrontend(c, c).Receive()
	if err != nil {
		return false
	}
	switch msg.(type) {
	case *pgproto3.AuthenticationSASL, *pgproto3.AuthenticationOk, *pgproto3.AuthenticationMD5Password, *pgproto3.AuthenticationCleartextPassword:
		return true
	}
	return false
}
