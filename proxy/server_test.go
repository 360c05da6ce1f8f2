package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/spawner"
)

func connString(srv *Server, db string, extra string) string {
	host, port, _ := net.SplitHostPort(srv.Addr().String())
	return fmt.Sprintf("host=%s port=%s user=tester database=%s sslmode=disable connect_timeout=10 %s", host, port, db, extra)
}

func queryText(t *testing.T, c *pgconn.PgConn, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 {
		t.Fatalf("%s: unexpected result %+v", sql, res)
	}
	return string(res[0].Rows[0][0])
}

// TestSessionsRouteToTheirSilo runs real client sessions (pgconn) through
// the proxy to two fake postmasters and checks each reached its own.
func TestSessionsRouteToTheirSilo(t *testing.T) {
	t.Parallel()
	forEachRelay(t, func(t *testing.T, opts Options) {
		env := startEnv(t, testConfig(t, false), opts)
		for _, tc := range []struct{ db, silo string }{{"a", "a"}, {"b", "b"}, {"anything", "b"}} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := pgconn.Connect(ctx, connString(env.srv, tc.db, ""))
			cancel()
			if err != nil {
				t.Fatalf("connect %s: %v", tc.db, err)
			}
			if got := queryText(t, c, "select '"+tc.db+"'"); got != "select '"+tc.db+"'" {
				t.Fatalf("query echoed %q", got)
			}
			before := len(env.pm[tc.silo].startupPackets())
			if before == 0 {
				t.Fatalf("database %s did not reach silo %s", tc.db, tc.silo)
			}
			c.Close(context.Background())
		}
		waitFor(t, "leases released", func() bool { return env.silos.leases("a") == 0 && env.silos.leases("b") == 0 })
		waitFor(t, "cancel map emptied", func() bool { return env.srv.cancels.len() == 0 })
		m := env.srv.Metrics()
		if got := testutil.ToFloat64(m.connections.WithLabelValues("b", resultOK)); got != 2 {
			t.Fatalf("connections_total{silo=b,result=ok} = %v, want 2", got)
		}
		waitFor(t, "relay bytes counted", func() bool {
			return testutil.ToFloat64(m.relayBytes.WithLabelValues("a", dirClientToServer)) > 0 &&
				testutil.ToFloat64(m.relayBytes.WithLabelValues("a", dirServerToClient)) > 0
		})
		if got := testutil.ToFloat64(m.clientConnections.WithLabelValues("a")); got != 0 {
			t.Fatalf("client_connections{silo=a} = %v after the session ended", got)
		}
	})
}

// TestStartupForwardedByteForByte sends a startup packet with duplicate
// and odd parameters and checks the postmaster received exactly it.
func TestStartupForwardedByteForByte(t *testing.T) {
	t.Parallel()
	env := startEnv(t, testConfig(t, false), Options{})
	pkt := startupPacket(ProtocolVersion30, "database", "zzz", "user", "u\xff", "options", "-c a=b", "database", "a", "x", "")
	c := dialProxy(t, env.srv)
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	readBackend(t, c, 'Z')
	got := env.pm["a"].startupPackets()
	if len(got) != 1 || !bytes.Equal(got[0], pkt) {
		t.Fatalf("postmaster got %q, want %q", got, pkt)
	}
}

// TestPipelinedQueryNotLost writes the startup packet and a query in one
// write, before authentication completed: the query must reach the
// postmaster and its answer come back.
func TestPipelinedQueryNotLost(t *testing.T) {
	t.Parallel()
	forEachRelay(t, func(t *testing.T, opts Options) {
		env := startEnv(t, testConfig(t, false), opts)
		for _, via := range []string{"tcp", "unix"} {
			t.Run(via, func(t *testing.T) {
				var c net.Conn
				if via == "tcp" {
					c = dialProxy(t, env.srv)
				} else {
					env := startEnv(t, withUnixSocket(t, testConfig(t, false)), opts)
					var err error
					c, err = net.Dial("unix", env.srv.UnixSocketPath())
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
				}
				out := startupPacket(ProtocolVersion30, "user", "u", "database", "a")
				out, _ = (&pgproto3.Query{String: "pipelined one"}).Encode(out)
				out, _ = (&pgproto3.Query{String: "pipelined two"}).Encode(out)
				if _, err := c.Write(out); err != nil {
					t.Fatal(err)
				}
				readBackend(t, c, 'Z') // startup
				for _, want := range []string{"pipelined one", "pipelined two"} {
					msgs := readBackend(t, c, 'Z')
					var got string
					for _, m := range msgs {
						if d, ok := m.(*pgproto3.DataRow); ok {
							got = string(d.Values[0])
						}
					}
					if got != want {
						t.Fatalf("answer %q, want %q", got, want)
					}
				}
			})
		}
	})
}

func TestRejectionsBeforeRelay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(env *testEnv)
		packet   []byte
		sqlstate string
		msg      string
		silo     string
		result   string
	}{
		{name: "unknown database", packet: startupPacket(ProtocolVersion30, "user", "u", "database", "nope"),
			sqlstate: "3D000", msg: `database "nope" does not exist`, silo: "", result: resultUnknownDatabase},
		{name: "database defaults to an unknown user name", packet: startupPacket(ProtocolVersion30, "user", "mallory"),
			sqlstate: "3D000", msg: `database "mallory" does not exist`, silo: "", result: resultUnknownDatabase},
		{name: "missing user", packet: startupPacket(ProtocolVersion30, "database", "a"),
			sqlstate: "28000", msg: "no PostgreSQL user name specified in startup packet", silo: "", result: resultProtocolError},
		{name: "protocol 2", packet: startupPacket(2<<16, "user", "u"),
			sqlstate: "08P01", silo: "", result: resultProtocolError},
		{name: "oversized packet", packet: rawPacket(20000, nil),
			sqlstate: "08P01", silo: "", result: resultProtocolError},
		{name: "silo unavailable", setup: func(env *testEnv) { env.silos.acquireErr["a"] = spawner.ErrUnavailable },
			packet: startupPacket(ProtocolVersion30, "user", "u", "database", "a"), sqlstate: "57P03", silo: "a", result: resultUnavailable},
		{name: "silo draining", setup: func(env *testEnv) { env.silos.acquireErr["a"] = spawner.ErrDraining },
			packet: startupPacket(ProtocolVersion30, "user", "u", "database", "a"), sqlstate: "57P03", silo: "a", result: resultUnavailable},
		{name: "silo gone from the spawner", setup: func(env *testEnv) { env.silos.acquireErr["a"] = spawner.ErrUnknownSilo },
			packet: startupPacket(ProtocolVersion30, "user", "u", "database", "a"), sqlstate: "3D000", silo: "", result: resultUnknownDatabase},
		{name: "too many clients", setup: func(env *testEnv) { env.silos.acquireErr["a"] = spawner.ErrTooManyClients },
			packet: startupPacket(ProtocolVersion30, "user", "u", "database", "a"), sqlstate: "53300", silo: "a", result: resultTooManyClients},
		{name: "postmaster socket missing", setup: func(env *testEnv) { env.silos.sockets["a"] = "/nonexistent/.s.PGSQL.5432" },
			packet: startupPacket(ProtocolVersion30, "user", "u", "database", "a"), sqlstate: "57P03", silo: "a", result: resultUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := startEnv(t, testConfig(t, true), Options{})
			if tt.setup != nil {
				tt.setup(env)
			}
			c := dialProxy(t, env.srv)
			c.Write(tt.packet)
			er := expectFatal(t, c, tt.sqlstate)
			if tt.msg != "" && er.Message != tt.msg {
				t.Fatalf("message %q, want %q", er.Message, tt.msg)
			}
			if strings.Contains(er.Message, `"b"`) {
				t.Fatalf("error reveals a silo: %q", er.Message)
			}
			got := testutil.ToFloat64(env.srv.Metrics().connections.WithLabelValues(tt.silo, tt.result))
			if got != 1 {
				t.Fatalf("connections_total{silo=%q,result=%q} = %v, want 1", tt.silo, tt.result, got)
			}
			if env.silos.leases("a") != 0 {
				t.Fatal("a lease was kept after the rejection")
			}
		})
	}
}

// TestMaxClients checks that a silo's lease limit reaches the client as
// 53300 while an existing session keeps working.
func TestMaxClients(t *testing.T) {
	t.Parallel()
	env := startEnv(t, testConfig(t, false), Options{})
	env.silos.maxClients = 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(context.Background())
	_, err = pgconn.Connect(ctx, connString(env.srv, "a", ""))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Fatalf("second connection: %v, want 53300", err)
	}
	queryText(t, first, "still working")
}

func TestCancelRouting(t *testing.T) {
	t.Parallel()
	forEachRelay(t, func(t *testing.T, opts Options) {
		env := startEnv(t, testConfig(t, false), opts)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		// Another session in the other silo with the same pid: the fake
		// postmasters number pids alike, as separate pid namespaces do.
		other, err := pgconn.Connect(ctx, connString(env.srv, "b", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close(context.Background())
		if c.PID() != other.PID() {
			t.Fatalf("test assumes equal pids, got %d and %d", c.PID(), other.PID())
		}

		// A forged key with the right pid cancels nothing.
		forged := cancelPacket(c.PID(), []byte{0, 0, 0, 0})
		fc := dialProxy(t, env.srv)
		fc.Write(forged)
		fc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := fc.Read(make([]byte, 1)); err == nil {
			t.Fatal("the proxy answered a cancel request")
		}
		m := env.srv.Metrics()
		if got := testutil.ToFloat64(m.cancelRequests.WithLabelValues("unknown_key")); got != 1 {
			t.Fatalf("cancel_requests_total{unknown_key} = %v", got)
		}

		done := make(chan error, 1)
		go func() {
			_, err := c.Exec(ctx, "select sleep").ReadAll()
			done <- err
		}()
		time.Sleep(50 * time.Millisecond) // let the query reach the postmaster
		if err := c.CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		err = <-done
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Fatalf("cancelled query: %v, want 57014", err)
		}
		if a, _ := env.pm["a"].cancelCounts(); a != 1 {
			t.Fatalf("silo a saw %d matching cancels", a)
		}
		if b, bad := env.pm["b"].cancelCounts(); b != 0 || bad != 0 {
			t.Fatalf("silo b saw cancels (%d matching, %d not): routing by pid alone", b, bad)
		}
		if got := testutil.ToFloat64(m.cancelRequests.WithLabelValues("forwarded")); got != 1 {
			t.Fatalf("cancel_requests_total{forwarded} = %v", got)
		}
		queryText(t, other, "other session unaffected")
	})
}

// TestCancelLongKey runs a protocol-3.2 style 32-byte secret through the
// startup scanner and the cancel map.
func TestCancelLongKey(t *testing.T) {
	t.Parallel()
	pm := newFakePostmaster(t, 32)
	fs := newFakeSilos(map[string]string{"a": pm.path, "b": pm.path})
	srv, err := New(testConfig(t, false), fs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background(), spawner.StopImmediate, 0)
	c := dialProxy(t, srv)
	c.Write(startupPacket(ProtocolVersion30, "user", "u", "database", "a"))
	var key *pgproto3.BackendKeyData
	for _, m := range readBackend(t, c, 'Z') {
		if k, ok := m.(*pgproto3.BackendKeyData); ok {
			key = k
		}
	}
	if key == nil || len(key.SecretKey) != 32 {
		t.Fatalf("BackendKeyData %+v", key)
	}
	q, _ := (&pgproto3.Query{String: "sleep"}).Encode(nil)
	c.Write(q)
	time.Sleep(50 * time.Millisecond)
	// The first 4 bytes of the secret alone are not the key.
	short := dialProxy(t, srv)
	short.Write(cancelPacket(key.ProcessID, key.SecretKey[:4]))
	cc := dialProxy(t, srv)
	cc.Write(cancelPacket(key.ProcessID, key.SecretKey))
	msgs := readBackend(t, c, 'Z')
	er, ok := msgs[0].(*pgproto3.ErrorResponse)
	if !ok || er.Code != "57014" {
		t.Fatalf("after cancel got %+v", msgs)
	}
	c.Close()
	waitFor(t, "cancel entry removed", func() bool { return srv.cancels.len() == 0 })
}

// TestGarbageConnections throws 1000 connections of random bytes at the
// proxy and checks it still serves.
func TestGarbageConnections(t *testing.T) {
	t.Parallel()
	env := startEnv(t, testConfig(t, false), Options{LoginTimeout: 2 * time.Second})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.Dial("tcp", env.srv.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			junk := make([]byte, 1+i%300)
			rand.Read(junk)
			if i%3 == 0 {
				junk[0] = 0 // plausible length words too
			}
			c.Write(junk)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 512)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
	if err != nil {
		t.Fatalf("proxy stopped serving after garbage: %v", err)
	}
	queryText(t, c, "alive")
	c.Close(ctx)
	waitFor(t, "garbage connections closed", func() bool {
		env.srv.mu.Lock()
		defer env.srv.mu.Unlock()
		return len(env.srv.conns) == 0
	})
}

// TestSlowloris checks that a client that never completes its startup
// packet is cut off at the login timeout with 08P01.
func TestSlowloris(t *testing.T) {
	t.Parallel()
	env := startEnv(t, testConfig(t, false), Options{LoginTimeout: 300 * time.Millisecond})
	for _, partial := range [][]byte{nil, {0, 0}, startupPacket(ProtocolVersion30, "user", "u")[:12]} {
		c := dialProxy(t, env.srv)
		c.Write(partial)
		expectFatal(t, c, "08P01")
	}
	if got := testutil.ToFloat64(env.srv.Metrics().connections.WithLabelValues("", resultProtocolError)); got != 3 {
		t.Fatalf("protocol errors counted: %v", got)
	}
}

func TestNegotiationWithoutTLS(t *testing.T) {
	t.Parallel()
	env := startEnv(t, testConfig(t, false), Options{})
	read1 := func(c net.Conn) byte {
		t.Helper()
		var b [1]byte
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		return b[0]
	}
	t.Run("GSSENC then SSL then startup", func(t *testing.T) {
		c := dialProxy(t, env.srv)
		c.Write(codePacket(gssEncRequestCode))
		if b := read1(c); b != 'N' {
			t.Fatalf("GSSENCRequest answered %q", b)
		}
		c.Write(codePacket(sslRequestCode))
		if b := read1(c); b != 'N' {
			t.Fatalf("SSLRequest answered %q", b)
		}
		c.Write(startupPacket(ProtocolVersion32, "user", "u", "database", "a"))
		readBackend(t, c, 'Z')
	})
	t.Run("second SSLRequest", func(t *testing.T) {
		c := dialProxy(t, env.srv)
		c.Write(codePacket(sslRequestCode))
		read1(c)
		c.Write(codePacket(sslRequestCode))
		expectFatal(t, c, "08P01")
	})
	t.Run("GSSENCRequest after SSLRequest", func(t *testing.T) {
		c := dialProxy(t, env.srv)
		c.Write(codePacket(sslRequestCode))
		read1(c)
		c.Write(codePacket(gssEncRequestCode))
		expectFatal(t, c, "08P01")
	})
	t.Run("direct TLS without TLS configured", func(t *testing.T) {
		c := dialProxy(t, env.srv)
		c.Write([]byte{0x16, 3, 1, 0, 10})
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 8)); err == nil {
			t.Fatalf("got %d bytes, want the connection closed", n)
		}
	})
}

func TestShutdownSmartWaitsForSessions(t *testing.T) {
	t.Parallel()
	env := startEnv(t, testConfig(t, false), Options{SmartStopTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- env.srv.Shutdown(ctx, spawner.StopSmart, 5*time.Second) }()
	waitFor(t, "not ready", func() bool { return !env.srv.Ready() })
	if _, err := net.Dial("tcp", env.srv.Addr().String()); err == nil {
		t.Fatal("the listener still accepts during shutdown")
	}
	// The open session keeps working during the grace period.
	queryText(t, c, "during shutdown")
	env.silos.mu.Lock()
	early := len(env.silos.shutdowns)
	env.silos.mu.Unlock()
	if early != 0 {
		t.Fatal("silos were shut down while a session was open within the grace period")
	}
	c.Close(ctx)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	env.silos.mu.Lock()
	defer env.silos.mu.Unlock()
	if len(env.silos.shutdowns) != 1 || env.silos.shutdowns[0] != spawner.StopSmart {
		t.Fatalf("silo shutdowns %v, want one smart", env.silos.shutdowns)
	}
}

func TestShutdownImmediateClosesSessions(t *testing.T) {
	t.Parallel()
	forEachRelay(t, func(t *testing.T, opts Options) {
		env := startEnv(t, testConfig(t, false), opts)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if err := env.srv.Shutdown(ctx, spawner.StopImmediate, time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "after").ReadAll(); err == nil {
			t.Fatal("session survived an immediate shutdown")
		}
		if env.silos.leases("a") != 0 {
			t.Fatal("lease not released")
		}
	})
}

// BenchmarkSessionSetup measures one whole short session through the
// proxy: accept, startup packet, routing, lease, postmaster connection,
// startup phase up to ReadyForQuery, Terminate and teardown. Allocations
// reported include the fake postmaster's.
func BenchmarkSessionSetup(b *testing.B) {
	pm := newFakePostmaster(b, 4)
	fs := newFakeSilos(map[string]string{"a": pm.path, "b": pm.path})
	cfg := &config.Config{Listen: config.Listen{Address: "127.0.0.1:0"}, TLS: config.TLS{Mode: config.TLSDisable},
		Silos: []config.Silo{{Name: "a", Databases: []string{"a"}}}}
	srv, err := New(cfg, fs, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(context.Background(), spawner.StopImmediate, 0)
	pkt := startupPacket(ProtocolVersion30, "user", "u", "database", "a")
	term, _ := (&pgproto3.Terminate{}).Encode(nil)
	buf := make([]byte, 4096)
	addr := srv.Addr().String()
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(pkt)
		var sc backendScanner
		for !sc.ready {
			n, err := c.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := sc.scan(buf[:n]); err != nil {
				b.Fatal(err)
			}
		}
		c.Write(term)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.Close()
	}
}

// TestShutdownFast checks that SIGINT's mode stops the silos fast at once,
// without waiting for sessions, and closes what remains.
func TestShutdownFast(t *testing.T) {
	t.Parallel()
	forEachRelay(t, func(t *testing.T, opts Options) {
		env := startEnv(t, testConfig(t, false), opts)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgconn.Connect(ctx, connString(env.srv, "b", ""))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		if err := env.srv.Shutdown(ctx, spawner.StopFast, time.Hour); err != nil {
			t.Fatal(err)
		}
		env.silos.mu.Lock()
		modes := append([]spawner.StopMode(nil), env.silos.shutdowns...)
		env.silos.mu.Unlock()
		if len(modes) != 1 || modes[0] != spawner.StopFast {
			t.Fatalf("silo shutdowns %v, want one fast", modes)
		}
		if _, err := c.Exec(ctx, "after").ReadAll(); err == nil {
			t.Fatal("session survived the shutdown")
		}
		if env.silos.leases("b") != 0 || env.srv.Ready() {
			t.Fatal("lease kept or still ready after shutdown")
		}
	})
}

// TestStartFailureReleasesListeners checks that a Start that fails half
// way (the admin port is taken) leaves nothing bound.
func TestStartFailureReleasesListeners(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig(t, false)
	cfg.Listen.Address = freeTCPAddr(t)
	cfg.Admin.Address = taken.Addr().String()
	srv, err := New(cfg, newFakeSilos(nil), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err == nil {
		t.Fatal("Start succeeded on a taken admin port")
	}
	if srv.Ready() {
		t.Fatal("ready after a failed Start")
	}
	ln, err := net.Listen("tcp", cfg.Listen.Address)
	if err != nil {
		t.Fatalf("client port still bound after a failed Start: %v", err)
	}
	ln.Close()
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestParseRelayMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want RelayMode
		ok   bool
	}{
		{"", RelayLoop, true},
		{"loop", RelayLoop, true},
		{"goroutines", RelayGoroutines, true},
		{"splice", 0, false},
		{"Loop", 0, false},
	} {
		got, err := ParseRelayMode(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseRelayMode(%q) = %v, %v", tc.in, got, err)
		}
		if tc.ok && tc.in != "" && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}
