package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// loopResult is what relay returned.
type loopResult struct {
	c2s, s2c int64
	err      error
}

// loopPair connects a test client and a test postmaster through a relay
// loop: client is the client's end (TCP or Unix), server the postmaster's.
// prep runs on the proxy's ends before the loop takes them.
type loopPair struct {
	client, server net.Conn
	key            chan []byte
	abort          chan func()
	done           chan loopResult
}

func startLoopPair(t *testing.T, kind string, linger time.Duration, prep func(pc, ps net.Conn)) *loopPair {
	t.Helper()
	ls, err := startLoops()
	if err != nil || len(ls) == 0 {
		t.Fatalf("relay loops: %v", err)
	}
	client, proxyClient := clientPair(t, kind)
	proxyServer, server := unixPair(t)
	if prep != nil {
		prep(proxyClient, proxyServer)
	}
	p := &loopPair{client: client, server: server, key: make(chan []byte, 1),
		abort: make(chan func(), 1), done: make(chan loopResult, 1)}
	go func() {
		c2s, s2c, err := ls[0].relay(proxyClient, proxyServer, loopHooks{
			onKey:   func(k []byte) { p.key <- append([]byte(nil), k...) },
			handOff: func(abort func()) { p.abort <- abort },
			linger:  linger,
		})
		p.done <- loopResult{c2s, s2c, err}
	}()
	return p
}

func (p *loopPair) wait(t *testing.T, within time.Duration) loopResult {
	t.Helper()
	select {
	case r := <-p.done:
		return r
	case <-time.After(within):
		t.Fatalf("relay did not end within %v", within)
		return loopResult{}
	}
}

// readyForQuery is a ReadyForQuery message, which ends the startup scan.
var readyForQuery = []byte{'Z', 0, 0, 0, 5, 'I'}

// pattern returns n bytes that show any loss, duplication or reordering.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/7) ^ byte(i) ^ seed
	}
	return b
}

// TestLoopRelayBulkBothWays streams several MiB each way at once through
// small socket buffers and slow readers, so that writes come up short and
// the pending path runs: every byte arrives in order, the counts are
// exact, and each end of stream is passed on as a half-close.
func TestLoopRelayBulkBothWays(t *testing.T) {
	for _, kind := range []string{"tcp", "unix"} {
		t.Run(kind, func(t *testing.T) {
			stalls := loopStalls.Load()
			p := startLoopPair(t, kind, time.Minute, func(pc, ps net.Conn) {
				pc.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(4096)
				ps.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(4096)
			})
			up := pattern(3<<20, 1)
			down := append(append([]byte(nil), readyForQuery...), pattern(3<<20, 2)...)
			var wg sync.WaitGroup
			var gotUp, gotDown []byte
			var upErr, downErr error
			slowRead := func(c net.Conn, into *[]byte, errp *error) {
				defer wg.Done()
				buf := make([]byte, 1500)
				for i := 0; ; i++ {
					if i < 200 {
						time.Sleep(100 * time.Microsecond)
					}
					n, err := c.Read(buf)
					*into = append(*into, buf[:n]...)
					if err != nil {
						if !errors.Is(err, io.EOF) {
							*errp = err
						}
						return
					}
				}
			}
			wg.Add(2)
			go slowRead(p.server, &gotUp, &upErr)
			go slowRead(p.client, &gotDown, &downErr)
			go func() {
				p.client.Write(up)
				p.client.(closeWriter).CloseWrite()
			}()
			go func() {
				p.server.Write(down)
				p.server.(closeWriter).CloseWrite()
			}()
			wg.Wait()
			if upErr != nil || downErr != nil {
				t.Fatalf("read errors: up %v, down %v", upErr, downErr)
			}
			if !bytes.Equal(gotUp, up) {
				t.Fatalf("client->server: got %d bytes, want %d, equal prefix %d", len(gotUp), len(up), commonPrefix(gotUp, up))
			}
			if !bytes.Equal(gotDown, down) {
				t.Fatalf("server->client: got %d bytes, want %d, equal prefix %d", len(gotDown), len(down), commonPrefix(gotDown, down))
			}
			r := p.wait(t, 10*time.Second)
			if r.err != nil || r.c2s != int64(len(up)) || r.s2c != int64(len(down)) {
				t.Fatalf("relay returned %d, %d, %v; want %d, %d, nil", r.c2s, r.s2c, r.err, len(up), len(down))
			}
			if loopStalls.Load() == stalls {
				t.Fatal("no write came up short: the pending path did not run")
			}
		})
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestLoopRelayBackendKey sends the postmaster's startup messages in
// pieces that split BackendKeyData: the key reaches the cancel hook once,
// and the client gets the bytes unchanged.
func TestLoopRelayBackendKey(t *testing.T) {
	p := startLoopPair(t, "tcp", time.Minute, nil)
	defer p.client.Close()
	msgs := []byte{'R', 0, 0, 0, 8, 0, 0, 0, 0} // AuthenticationOk
	msgs = append(msgs, 'K', 0, 0, 0, 12)
	msgs = binary.BigEndian.AppendUint32(msgs, 4242)
	msgs = append(msgs, 0xde, 0xad, 0xbe, 0xef)
	msgs = append(msgs, readyForQuery...)
	msgs = append(msgs, 'K', 0, 0, 0, 12, 9, 9, 9, 9, 9, 9, 9, 9) // after ReadyForQuery: not scanned
	for _, piece := range [][]byte{msgs[:7], msgs[7:12], msgs[12:16], msgs[16:]} {
		p.server.Write(piece)
		time.Sleep(5 * time.Millisecond)
	}
	got := make([]byte, len(msgs))
	p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(p.client, got); err != nil || !bytes.Equal(got, msgs) {
		t.Fatalf("client got %x, %v; want %x", got, err, msgs)
	}
	select {
	case k := <-p.key:
		if want := []byte{0, 0, 0x10, 0x92, 0xde, 0xad, 0xbe, 0xef}; !bytes.Equal(k, want) {
			t.Fatalf("key %x, want %x", k, want)
		}
	default:
		t.Fatal("no BackendKeyData reported")
	}
	p.server.Close()
	p.client.Close()
	p.wait(t, 10*time.Second)
	if len(p.key) != 0 {
		t.Fatal("key reported twice")
	}
}

// TestLoopRelayEnds covers every way a loop session ends: each must end
// the relay, close both proxy ends, and report an error only for a broken
// postmaster stream.
func TestLoopRelayEnds(t *testing.T) {
	const linger = 200 * time.Millisecond
	tests := []struct {
		name    string
		act     func(t *testing.T, p *loopPair)
		wantErr bool
		// minimum time the relay must take (the linger)
		atLeast time.Duration
	}{
		{name: "abort of an idle session", act: func(t *testing.T, p *loopPair) {
			(<-p.abort)()
		}},
		{name: "client closes first", act: func(t *testing.T, p *loopPair) {
			p.client.Close()
			p.server.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(p.server); err != nil {
				t.Errorf("postmaster did not see EOF: %v", err)
			}
			p.server.Close()
		}},
		{name: "client resets", act: func(t *testing.T, p *loopPair) {
			p.client.(*net.TCPConn).SetLinger(0)
			p.client.Close()
		}},
		{name: "postmaster closes, client lingers", atLeast: linger, act: func(t *testing.T, p *loopPair) {
			p.server.Write(readyForQuery)
			p.server.Close()
			p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(p.client)
			if err != nil || !bytes.Equal(got, readyForQuery) {
				t.Errorf("client read %x, %v; want the message, then EOF", got, err)
			}
		}},
		{name: "broken postmaster stream", wantErr: true, act: func(t *testing.T, p *loopPair) {
			p.server.Write([]byte{'R', 0, 0, 0, 2})
			p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, _ := io.ReadAll(p.client)
			if !bytes.Equal(got, []byte{'R', 0, 0, 0, 2}) {
				t.Errorf("client got %x before the close", got)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startLoopPair(t, "tcp", linger, nil)
			begin := time.Now()
			tc.act(t, p)
			r := p.wait(t, 10*time.Second)
			if (r.err != nil) != tc.wantErr {
				t.Fatalf("relay error %v, want error: %v", r.err, tc.wantErr)
			}
			if d := time.Since(begin); d < tc.atLeast {
				t.Fatalf("relay ended after %v, before the linger of %v", d, tc.atLeast)
			}
			// The proxy's ends are closed: the client sees the end.
			p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadAll(p.client); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				t.Fatalf("client end not closed: %v", err)
			}
		})
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "read"
}

// TestLoopRelayCountsLive checks that a loop session's bytes reach
// silo_proxy_relay_bytes_total while the session is still open, and that
// its end adds nothing twice.
func TestLoopRelayCountsLive(t *testing.T) {
	env := startEnv(t, testConfig(t, false), Options{Relay: RelayLoop})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
	if err != nil {
		t.Fatal(err)
	}
	m := env.srv.Metrics()
	up := func() float64 { return testutil.ToFloat64(m.relayBytes.WithLabelValues("a", dirClientToServer)) }
	down := func() float64 { return testutil.ToFloat64(m.relayBytes.WithLabelValues("a", dirServerToClient)) }
	before := up()
	queryText(t, c, "select 'live'")
	waitFor(t, "bytes counted during the session", func() bool { return up() > before && down() > 0 })
	open := up()
	c.Close(ctx)
	terminate := float64(5) // pgconn's Terminate
	waitFor(t, "session ended", func() bool { return env.silos.leases("a") == 0 })
	if got := up(); got != open+terminate {
		t.Fatalf("client_to_server %v after the session, want %v (counted during it) + %v (Terminate)", got, open, terminate)
	}
}

// TestLoopLetsTheCollectorRun checks that a loop waiting in a raw system
// call does not hold up a stop-the-world phase: garbage collections must
// complete while a session keeps the loop busy and while it idles.
func TestLoopLetsTheCollectorRun(t *testing.T) {
	p := startLoopPair(t, "tcp", time.Minute, nil)
	defer p.client.Close()
	defer p.server.Close()
	p.server.Write(readyForQuery)
	if _, err := io.ReadFull(p.client, make([]byte, len(readyForQuery))); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() { // the postmaster echoes
		io.Copy(p.server, p.server)
	}()
	go func() { // the client ping-pongs until told to stop
		defer close(pinged)
		b := make([]byte, 64)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.client.Write(b); err != nil {
				return
			}
			if _, err := io.ReadFull(p.client, b); err != nil {
				return
			}
		}
	}()
	gcs := func(what string) {
		done := make(chan struct{})
		go func() {
			for range 20 {
				runtime.GC()
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("20 garbage collections did not finish while the loop was %s", what)
		}
	}
	gcs("busy")
	close(stop)
	<-pinged
	time.Sleep(50 * time.Millisecond) // past busyWait: the loop idles
	gcs("idle")
}
