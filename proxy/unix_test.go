package proxy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/silo-proxy/silo-proxy/config"
)

func withUnixSocket(t *testing.T, cfg *config.Config) *config.Config {
	t.Helper()
	// A fixed port gives a predictable socket name; the TCP port itself
	// is still chosen by the kernel... so bind one first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.Address = ln.Addr().String()
	ln.Close()
	cfg.Listen.UnixSocketDir = t.TempDir()
	return cfg
}

func TestUnixSocketListener(t *testing.T) {
	t.Parallel()
	cfg := withUnixSocket(t, testConfig(t, false))
	env := startEnv(t, cfg, Options{})
	_, port, _ := net.SplitHostPort(cfg.Listen.Address)
	want := filepath.Join(cfg.Listen.UnixSocketDir, ".s.PGSQL."+port)
	if env.srv.UnixSocketPath() != want {
		t.Fatalf("socket %q, want %q", env.srv.UnixSocketPath(), want)
	}
	fi, err := os.Stat(want)
	if err != nil || fi.Mode().Perm() != 0o777 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	// libpq-style: host is the directory, port picks the file name.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, "host="+cfg.Listen.UnixSocketDir+" port="+port+" user=u database=a sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if got := queryText(t, c, "over unix"); got != "over unix" {
		t.Fatalf("got %q", got)
	}
	c.Close(ctx)
}

func TestUnixSocketStaleAndInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, ".s.PGSQL.6543")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // leaves the file, as a crashed process would

	ln, got, err := listenUnixSocket(dir, "127.0.0.1:6543")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln.Close()
	if got != path {
		t.Fatalf("path %q", got)
	}
	if _, _, err := listenUnixSocket(dir, "127.0.0.1:6543"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	regular := filepath.Join(dir, ".s.PGSQL.7000")
	os.WriteFile(regular, nil, 0o600)
	if _, _, err := listenUnixSocket(dir, "127.0.0.1:7000"); err == nil {
		t.Fatal("a regular file was replaced by the socket")
	}
}
