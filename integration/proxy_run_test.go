package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

// runProcess starts `silo-proxy run` like startProxy, but hands the exit
// status to the test: these tests end the process themselves.
func runProcess(t *testing.T, pc ProxyConfig, args ...string) (*child, <-chan error) {
	t.Helper()
	c := &child{Out: &logBuffer{}}
	c.Cmd = exec.Command(buildBinary(t), append([]string{"run", "--config", pc.Path}, args...)...)
	c.Cmd.Stdout, c.Cmd.Stderr = c.Out, c.Out
	if err := c.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Cmd.Wait() }()
	t.Cleanup(func() {
		c.Cmd.Process.Kill()
		if t.Failed() {
			t.Logf("silo-proxy output:\n%s", c.Logs())
		}
	})
	eventually(t, 60*time.Second, "silo-proxy ready", func() bool {
		resp, err := http.Get("http://" + pc.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return c, exited
}

func readyzCode(admin string) int {
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestProxyRunSignals checks the shutdown contract of `silo-proxy run`:
// SIGTERM stops accepting (readyz 503) while open sessions continue within
// --shutdown-grace, then exits 0; SIGINT exits 0 after a fast stop.
func TestProxyRunSignals(t *testing.T) {
	e := newEnv(t)
	pwFile, pw := writePassword(t, e)
	pc := e.WriteConfig(fmt.Sprintf("defaults:\n  superuser_password_file: %s\nsilos:\n  - name: app\n    databases: [app]\n", pwFile))
	host, port, _ := net.SplitHostPort(pc.Listen)
	dsn := fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=app sslmode=disable connect_timeout=90", host, port, fslayout.PostgresUser, pw)

	t.Run("SIGTERM drains then exits 0", func(t *testing.T) {
		proc, exited := runProcess(t, pc, "--shutdown-grace", "20s")
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		proc.Cmd.Process.Signal(syscall.SIGTERM)
		eventually(t, 10*time.Second, "readyz 503", func() bool { return readyzCode(pc.Admin) == http.StatusServiceUnavailable })
		if nc, err := net.DialTimeout("tcp", pc.Listen, time.Second); err == nil {
			nc.Close()
			t.Fatal("the proxy still accepts clients after SIGTERM")
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
			t.Fatalf("open session during the grace period: %v", err)
		}
		c.Close(ctx)
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("silo-proxy did not exit after its last session ended")
		}
	})

	t.Run("SIGINT stops fast and exits 0", func(t *testing.T) {
		proc, exited := runProcess(t, pc)
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		proc.Cmd.Process.Signal(syscall.SIGINT)
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("exit after SIGINT: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("silo-proxy did not exit after SIGINT")
		}
		if err := c.Ping(ctx); err == nil {
			t.Fatal("session survived a fast shutdown")
		}
	})
}
