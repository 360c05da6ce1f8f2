package integration

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/proxy"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// TestProxySessions runs real clients through the proxy to two real silos:
// routing, the extended protocol, cancel, the startup errors of DESIGN.md
// §5, cold starts, hostile clients and the metrics they leave.
func TestProxySessions(t *testing.T) {
	e := newEnv(t)
	pwFile, pw := writePassword(t, e)
	cfg := e.Config(
		Silo("app", []string{"app"}, withPassword(pwFile), func(s *config.Silo) { s.MaxClients = 3 }),
		Silo("sales", []string{"sales", "sales_archive"}, withPassword(pwFile)),
	)
	cfg.Listen.Address = freeAddr(t)
	cfg.Listen.UnixSocketDir = e.MkdirShared("sock")
	r := startRig(t, e, cfg, pw, proxy.Options{})
	startAll(t, r.mgr, "app", "sales")

	t.Run("psql reaches two silos", func(t *testing.T) {
		for _, db := range []string{"app", "sales", "sales_archive"} {
			out, err := r.psqlCmd(db, "-c", "SELECT current_database()").CombinedOutput()
			if err != nil || trimOut(out) != db {
				t.Fatalf("psql %s: %v %q", db, err, out)
			}
		}
		// Over the proxy's Unix socket too: psql -h DIR -p PORT.
		_, port, _ := net.SplitHostPort(cfg.Listen.Address)
		cmd := exec.Command("psql", "-X", "-A", "-t", "-h", cfg.Listen.UnixSocketDir, "-p", port, "-U", "postgres", "-d", "sales", "-c", "SELECT current_database()")
		cmd.Env = append(r.psqlCmd("x").Env, "PGHOST="+cfg.Listen.UnixSocketDir)
		if out, err := cmd.CombinedOutput(); err != nil || trimOut(out) != "sales" {
			t.Fatalf("psql over the unix socket: %v %q", err, out)
		}
		// Each database reached its own silo's cluster.
		a, s := r.connect(t, "app"), r.connect(t, "sales")
		if systemID(t, a) == systemID(t, s) {
			t.Fatal("app and sales answered from the same cluster")
		}
		if systemID(t, a) != systemID(t, connectSilo(t, cfg, "app", "app")) {
			t.Fatal("the proxy's app session is not on the app silo")
		}
	})

	t.Run("pgx extended protocol and prepared statements", func(t *testing.T) {
		c := r.connect(t, "app")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if _, err := c.Exec(ctx, "CREATE TABLE IF NOT EXISTS kv(k int PRIMARY KEY, v text)"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Prepare(ctx, "put", "INSERT INTO kv VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"); err != nil {
			t.Fatal(err)
		}
		b := &pgx.Batch{}
		for i := range 100 {
			b.Queue("put", i, strings.Repeat("x", i))
		}
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			t.Fatal(err)
		}
		var n int
		var total int64
		if err := c.QueryRow(ctx, "SELECT count(*), sum(length(v)) FROM kv WHERE k >= $1", 0).Scan(&n, &total); err != nil {
			t.Fatal(err)
		}
		if n != 100 || total != 4950 {
			t.Fatalf("count %d sum %d", n, total)
		}
	})

	t.Run("pg_isready", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(r.srv.Addr().String())
		out, err := exec.Command("pg_isready", "-h", host, "-p", port, "-d", "app", "-t", "30").CombinedOutput()
		if err != nil {
			t.Fatalf("pg_isready: %v %s", err, out)
		}
	})

	t.Run("cancel from pgx within 1s and forged keys cancel nothing", func(t *testing.T) {
		c := r.connect(t, "app")
		observer := r.connect(t, "app")
		pid := c.PgConn().PID()
		done := make(chan error, 1)
		go func() {
			_, err := c.Exec(context.Background(), "SELECT pg_sleep(30)")
			done <- err
		}()
		eventually(t, 20*time.Second, "the query running", func() bool { return queryActive(t, observer, pid) })

		// A forged key: the right pid, a wrong secret.
		secret := append([]byte(nil), c.PgConn().SecretKey()...)
		secret[0] ^= 0xff
		fc, err := net.Dial("tcp", r.srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fc.Write(cancelPacket(pid, secret))
		fc.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, fc)
		fc.Close()
		time.Sleep(1500 * time.Millisecond)
		if !queryActive(t, observer, pid) {
			t.Fatal("a forged cancel key cancelled the query")
		}
		if v, _ := r.metric(t, "silo_proxy_cancel_requests_total", map[string]string{"result": "unknown_key"}); v < 1 {
			t.Fatalf("unknown_key cancels counted: %v", v)
		}

		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		err = <-done
		took := time.Since(start)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("cancelled query returned %v, want 57014", err)
		}
		if took > time.Second {
			t.Fatalf("cancel took %v, want under 1s", took)
		}
	})

	t.Run("cancel from psql's SIGINT within 1s", func(t *testing.T) {
		observer := r.connect(t, "sales")
		cmd := r.psqlCmd("sales", "-c", "SELECT pg_sleep(30)")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		eventually(t, 20*time.Second, "psql's query running", func() bool {
			var n int
			observer.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'").Scan(&n)
			return n == 1
		})
		start := time.Now()
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		took := time.Since(start)
		if err == nil || !strings.Contains(out.String(), "canceling statement due to user request") {
			t.Fatalf("psql after SIGINT: %v %q", err, out.String())
		}
		if took > time.Second {
			t.Fatalf("psql's cancel took %v, want under 1s", took)
		}
	})

	t.Run("unknown database", func(t *testing.T) {
		_, err := r.connectErr("nosuchdb", "")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "3D000" || pgErr.Severity != "FATAL" {
			t.Fatalf("got %v, want FATAL 3D000", err)
		}
		if pgErr.Message != `database "nosuchdb" does not exist` {
			t.Fatalf("message %q", pgErr.Message)
		}
	})

	t.Run("max_clients", func(t *testing.T) {
		eventually(t, 30*time.Second, "app without clients", func() bool { return status(t, r.mgr, "app").Clients == 0 })
		for range 3 {
			r.connect(t, "app")
		}
		_, err := r.connectErr("app", "")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
			t.Fatalf("4th client of a max_clients=3 silo: %v, want 53300", err)
		}
	})

	t.Run("stopped silo starts cold", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		eventually(t, 30*time.Second, "sales without clients", func() bool { return status(t, r.mgr, "sales").Clients == 0 })
		if err := r.mgr.Stop(ctx, "sales", spawner.StopFast); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "sales stopped", func() bool { return status(t, r.mgr, "sales").State == spawner.StateStopped })
		c := r.connect(t, "sales")
		var one int
		if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("query after a cold start: %v", err)
		}
		if v, _ := r.metric(t, "silo_proxy_connect_duration_seconds", map[string]string{"silo": "sales", "start": "cold"}); v < 1 {
			t.Fatal("the cold start was not observed in connect_duration_seconds{start=cold}")
		}
	})

	t.Run("slowloris closed at the login timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", r.srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.Write([]byte{0, 0})
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := pgproto3.NewFrontend(c, c).Receive()
		took := time.Since(start)
		er, ok := m.(*pgproto3.ErrorResponse)
		if err != nil || !ok || er.Code != "08P01" {
			t.Fatalf("got %T %v, want a FATAL 08P01", m, err)
		}
		if took < 9*time.Second || took > 20*time.Second {
			t.Fatalf("closed after %v, want the 10s login timeout", took)
		}
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after the timeout error")
		}
	})

	t.Run("1000 garbage connections leave the proxy serving", func(t *testing.T) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i := range 1000 {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := net.Dial("tcp", r.srv.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				junk := make([]byte, 1+i%200)
				rand.Read(junk)
				if i%2 == 0 {
					junk[0] = 0
				}
				c.Write(junk)
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				io.Copy(io.Discard, c)
			}()
		}
		wg.Wait()
		out, err := r.psqlCmd("app", "-c", "SELECT 'still serving'").CombinedOutput()
		if err != nil || trimOut(out) != "still serving" {
			t.Fatalf("after garbage: %v %q", err, out)
		}
	})

	t.Run("metrics lint clean and move with traffic", func(t *testing.T) {
		before, _ := r.metric(t, "silo_proxy_relay_bytes_total", map[string]string{"silo": "app", "direction": "client_to_server"})
		if out, err := r.psqlCmd("app", "-c", "SELECT repeat('x', 10000)").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		eventually(t, 10*time.Second, "relay bytes to move", func() bool {
			v, _ := r.metric(t, "silo_proxy_relay_bytes_total", map[string]string{"silo": "app", "direction": "client_to_server"})
			return v > before
		})
		resp, err := http.Get("http://" + r.srv.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		problems, err := promlint.New(resp.Body).Lint()
		if err != nil || len(problems) != 0 {
			t.Fatalf("promlint: %v %+v", err, problems)
		}
		for _, want := range []struct {
			name   string
			labels map[string]string
		}{
			{"silo_proxy_connections_total", map[string]string{"silo": "app", "result": "ok"}},
			{"silo_proxy_connections_total", map[string]string{"silo": "", "result": "unknown_database"}},
			{"silo_proxy_connections_total", map[string]string{"silo": "app", "result": "too_many_clients"}},
			{"silo_proxy_connections_total", map[string]string{"silo": "", "result": "protocol_error"}},
			{"silo_proxy_relay_bytes_total", map[string]string{"silo": "sales", "direction": "server_to_client"}},
			{"silo_proxy_silo_up", map[string]string{"silo": "app"}},
			{"silo_proxy_silo_starts_total", map[string]string{"silo": "sales", "reason": "cold"}},
			{"silo_proxy_silo_exits_total", map[string]string{"silo": "sales", "how": "clean"}},
			{"silo_proxy_cancel_requests_total", map[string]string{"result": "forwarded"}},
		} {
			if v, ok := r.metric(t, want.name, want.labels); !ok || v <= 0 {
				t.Errorf("%s%v = %v (present %v), want > 0", want.name, want.labels, v, ok)
			}
		}
		if _, ok := r.metric(t, "silo_proxy_connections_total", map[string]string{"silo": "nosuchdb"}); ok {
			t.Error("a client-supplied database name became a label value")
		}
	})
}
