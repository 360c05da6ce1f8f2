// Package bench holds the benchmark harness (bench/run.sh, bench/harness)
// and, in this file, Go benchmarks of a whole proxy.Server over real
// sockets: a TCP client, the proxy's accept, startup, routing and relay,
// and a minimal postmaster on a Unix socket that answers like PostgreSQL
// does to pgbench -S. They measure what the proxy adds to one round trip
// and to one connection, with allocation counts; the fake postmaster and
// the client allocate nothing per operation, so the allocations reported
// are the proxy's.
//
//	go test -run '^$' -bench . -benchmem ./bench/
package bench

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/proxy"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// Pre-encoded protocol messages. The query and its answer have the sizes
// of pgbench's select-only transaction in the simple query protocol:
// "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;" and one int4
// row.
var (
	query  = simpleQuery("SELECT abalance FROM pgbench_accounts WHERE aid = 123456;")
	answer = concat(
		msg('T', []byte("\x00\x01abalance\x00\x00\x00\x40\x0a\x00\x03\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00")),
		msg('D', []byte("\x00\x01\x00\x00\x00\x04-123")),
		msg('C', []byte("SELECT 1\x00")),
		msg('Z', []byte("I")),
	)
	// login is what a postmaster sends after a trusted startup packet.
	login = concat(
		msg('R', []byte{0, 0, 0, 0}),
		msg('S', []byte("server_version\x0015.0\x00")),
		msg('K', []byte{0, 0, 0, 42, 1, 2, 3, 4}),
		msg('Z', []byte("I")),
	)
	terminate = msg('X', nil)
)

func msg(typ byte, body []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func simpleQuery(sql string) []byte { return msg('Q', append([]byte(sql), 0)) }

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func startupPacket(db string) []byte {
	body := binary.BigEndian.AppendUint32(nil, 3<<16)
	for _, kv := range []string{"user", "bench", "database", db, "application_name", "pgbench"} {
		body = append(body, kv...)
		body = append(body, 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(4+len(body))), body...)
}

// postmaster answers sessions on a Unix socket and on TCP: the login
// messages after the startup packet, then the fixed answer to every query
// message, until Terminate or EOF.
type postmaster struct {
	unixPath string
	tcpAddr  string
}

func startPostmaster(tb testing.TB) *postmaster {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), ".s.PGSQL.5432")
	ul, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ul.Close(); tl.Close() })
	for _, ln := range []net.Listener{ul, tl} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go servePostmaster(c)
			}
		}()
	}
	return &postmaster{unixPath: path, tcpAddr: tl.Addr().String()}
}

func servePostmaster(c net.Conn) {
	defer c.Close()
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:4]); err != nil {
		return
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:4])-4)
	if _, err := io.ReadFull(c, body); err != nil {
		return
	}
	if _, err := c.Write(login); err != nil {
		return
	}
	buf := make([]byte, 1024)
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
		if n > len(buf) {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		if hdr[0] == 'X' {
			return
		}
		if _, err := c.Write(answer); err != nil {
			return
		}
	}
}

// silos is a proxy.Silos whose every silo is the fake postmaster.
type silos struct{ socket string }

func (s *silos) Acquire(ctx context.Context, silo string) (*spawner.Lease, error) {
	return spawner.NewLease(silo, s.socket, func() {}), nil
}
func (s *silos) Start(context.Context, string) error                  { return nil }
func (s *silos) Stop(context.Context, string, spawner.StopMode) error { return nil }
func (s *silos) Restart(context.Context, string) error                { return nil }
func (s *silos) Statuses() []spawner.Status                           { return nil }
func (s *silos) Usage(string) (spawner.Usage, bool)                   { return spawner.Usage{}, false }
func (s *silos) Reconfigure(*config.Config) error                     { return nil }
func (s *silos) Shutdown(context.Context, spawner.StopMode) error     { return nil }

var _ proxy.Silos = (*silos)(nil)

// startProxy runs a proxy.Server with one silo, "bench", in front of pm,
// relaying plaintext sessions as relay says.
func startProxy(tb testing.TB, pm *postmaster, relay proxy.RelayMode) string {
	tb.Helper()
	cfg := &config.Config{
		Path:   filepath.Join(tb.TempDir(), "silo-proxy.yaml"),
		Listen: config.Listen{Address: "127.0.0.1:0"},
		TLS:    config.TLS{Mode: config.TLSDisable},
		Silos:  []config.Silo{{Name: "bench", Databases: []string{"bench"}}},
	}
	srv, err := proxy.New(cfg, &silos{socket: pm.unixPath}, proxy.Options{Relay: relay})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx, spawner.StopImmediate, 0)
	})
	return srv.Addr().String()
}

// paths are the ways a client reaches the fake postmaster: straight over
// TCP, straight over its Unix socket, and through the proxy (TCP to the
// proxy, Unix socket from the proxy) with its relay loop and with the
// goroutine relay. The fake postmaster and the clients run in the
// benchmark's process, on Go's poller, where the goroutine relay hands
// bytes from goroutine to goroutine on one thread; the relay loop's
// thread has to wake them as a real client and postmaster in other
// processes always must be woken. Single-client latencies here therefore
// favour the goroutine relay; bench/run.sh measures the real topology.
func paths(b *testing.B) []struct{ name, network, addr string } {
	pm := startPostmaster(b)
	return []struct{ name, network, addr string }{
		{"direct-tcp", "tcp", pm.tcpAddr},
		{"direct-unix", "unix", pm.unixPath},
		{"proxy", "tcp", startProxy(b, pm, proxy.RelayLoop)},
		{"proxy-goroutines", "tcp", startProxy(b, pm, proxy.RelayGoroutines)},
	}
}

// openSession opens a session: startup packet, then the postmaster's messages
// up to ReadyForQuery.
func openSession(tb testing.TB, network, addr string) net.Conn {
	c, err := net.Dial(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Write(startupPacket("bench")); err != nil {
		tb.Fatal(err)
	}
	got := make([]byte, len(login))
	if _, err := io.ReadFull(c, got); err != nil {
		tb.Fatal(err)
	}
	return c
}

// BenchmarkRoundTrip is one pgbench -S transaction in the simple query
// protocol, on an open session, one client: the time per operation is the
// round-trip latency, and proxy minus direct-tcp is what the proxy adds
// to every query.
func BenchmarkRoundTrip(b *testing.B) {
	for _, p := range paths(b) {
		b.Run(p.name, func(b *testing.B) {
			c := openSession(b, p.network, p.addr)
			defer c.Close()
			resp := make([]byte, len(answer))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(query); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRoundTripParallel is BenchmarkRoundTrip with 4×GOMAXPROCS
// clients, each on its own session (8 on two cores, as pgbench -c 8):
// the time per operation is the inverse of the throughput.
func BenchmarkRoundTripParallel(b *testing.B) {
	for _, p := range paths(b) {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				c := openSession(b, p.network, p.addr)
				defer c.Close()
				resp := make([]byte, len(answer))
				for pb.Next() {
					if _, err := c.Write(query); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, resp); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkConnect is one session from connect to close: startup packet,
// login messages, one query, Terminate (pgbench -S -C without
// authentication). Through the proxy it covers accept, the startup
// parser, routing, the lease, the dial to the silo's socket, the startup
// phase's scan for BackendKeyData and the cancel map.
func BenchmarkConnect(b *testing.B) {
	for _, p := range paths(b) {
		b.Run(p.name, func(b *testing.B) {
			resp := make([]byte, len(answer))
			b.ReportAllocs()
			for b.Loop() {
				c := openSession(b, p.network, p.addr)
				if _, err := c.Write(query); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					b.Fatal(err)
				}
				c.Write(terminate)
				c.Close()
			}
		})
	}
}
