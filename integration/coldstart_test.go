package integration

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// coldStartRounds is how many starts of each kind TestColdStartTimes times.
const coldStartRounds = 10

// TestColdStartTimes measures a silo's cold start (a stopped silo with an
// existing data directory, from Acquire until the lease: namespaces, root,
// postmaster, socket accepting a startup packet, databases checked) next
// to a plain postmaster start of the same data directory outside any
// sandbox (from exec until its socket answers a startup packet with an
// authentication request), interleaved in one run. It logs the numbers;
// timings on a shared machine are never asserted.
func TestColdStartTimes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("timing run skipped in -short mode")
	}
	e := newEnv(t)
	cfg := e.Config(Silo("cold", []string{"cold"}))
	m := e.startManager(cfg, nil)
	ctx := context.Background()
	startAll(t, m, "cold")
	if err := m.Stop(ctx, "cold", spawner.StopFast); err != nil {
		t.Fatal(err)
	}
	data := cfg.Paths("cold").Data
	siloUID := idRange(t, cfg, "cold").HostUID(fslayout.PostgresUID)
	const nobody = 65534
	plainRun := e.MkdirShared("plain-run")
	if err := os.Chown(plainRun, nobody, nobody); err != nil {
		t.Fatal(err)
	}

	var silo, plain []time.Duration
	for i := range coldStartRounds {
		begin := time.Now()
		lease, err := m.Acquire(ctx, "cold")
		took := time.Since(begin)
		if err != nil {
			t.Fatalf("round %d: Acquire: %v", i, err)
		}
		if !lease.ColdStart {
			t.Fatalf("round %d: the lease is not a cold start", i)
		}
		lease.Release()
		silo = append(silo, took)
		if err := m.Stop(ctx, "cold", spawner.StopFast); err != nil {
			t.Fatal(err)
		}

		chownTree(t, data, nobody)
		plain = append(plain, plainStart(t, e.Install, data, plainRun, nobody))
		chownTree(t, data, siloUID)
	}
	p50s, p50p := median(silo), median(plain)
	t.Logf("cold start over %d rounds, interleaved:", coldStartRounds)
	t.Logf("  silo (Acquire of a stopped silo): p50 %s  min %s  max %s", p50s, slices.Min(silo), slices.Max(silo))
	t.Logf("  plain postgres, same data dir:    p50 %s  min %s  max %s", p50p, slices.Min(plain), slices.Max(plain))
	t.Logf("  ratio silo/plain (p50): %.2f", float64(p50s)/float64(p50p))
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
