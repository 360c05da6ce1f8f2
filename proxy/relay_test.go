package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// unixPair returns both ends of a Unix stream connection.
func unixPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// clientPair returns both ends of a client connection of kind "tcp" or
// "unix": the client's and the proxy's.
func clientPair(t testing.TB, kind string) (net.Conn, net.Conn) {
	t.Helper()
	if kind == "tcp" {
		return tcpPair(t)
	}
	return unixPair(t)
}

// TestCopierCountsAndHalfCloses relays client->server over TCP->Unix (the
// splice path) and Unix->Unix (the buffered path): every byte arrives, the
// count is exact, and the source's EOF becomes a half-close of the
// destination while the other direction stays usable.
func TestCopierCountsAndHalfCloses(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"tcp", "unix"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			client, proxyClient := clientPair(t, kind)
			proxyServer, server := unixPair(t)
			cp := &copier{dst: proxyServer, src: proxyClient}
			if !splices(proxyClient) {
				cp.buf = make([]byte, 1024)
			}
			done := make(chan struct{})
			go func() { cp.run(); close(done) }()

			payload := bytes.Repeat([]byte("0123456789abcdef"), 50000) // 800 KB
			go func() {
				client.Write(payload)
				client.(closeWriter).CloseWrite()
			}()
			got, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			<-done
			if !bytes.Equal(got, payload) || cp.n != int64(len(payload)) || cp.err != nil {
				t.Fatalf("relayed %d bytes, counted %d, err %v; want %d", len(got), cp.n, cp.err, len(payload))
			}
			// Half-closed, not closed: the server can still answer.
			if _, err := server.Write([]byte("reply")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(proxyServer, buf); err != nil || string(buf) != "reply" {
				t.Fatalf("reply after half-close: %q %v", buf, err)
			}
		})
	}
}

// TestCopierErrorClosesBoth checks that a failing direction closes both
// ends, so the other direction stops too.
func TestCopierErrorClosesBoth(t *testing.T) {
	t.Parallel()
	client, proxyClient := tcpPair(t)
	proxyServer, server := unixPair(t)
	server.Close() // writes to proxyServer now fail
	cp := &copier{dst: proxyServer, src: proxyClient}
	done := make(chan struct{})
	go func() { cp.run(); close(done) }()
	go func() {
		for range 100 {
			if _, err := client.Write(make([]byte, 64<<10)); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("copier did not stop on a write error")
	}
	if cp.err == nil {
		t.Fatal("no error reported")
	}
	if _, err := proxyClient.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("source not closed: %v", err)
	}
	if _, err := proxyServer.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("destination not closed: %v", err)
	}
}

// BenchmarkRelay measures the raw phase of a session: a client writes
// 64 KiB blocks through the proxy to an echoing server and reads them
// back, TCP or Unix client, with the goroutine relay (TCP->Unix spliced)
// and with the relay loop. The echoing server runs in this process, on
// Go's poller: the goroutine relay wakes it without a thread switch,
// which a postmaster in another process always needs, so this favours the
// goroutine relay; bench/run.sh measures real clients and postmasters.
func BenchmarkRelay(b *testing.B) {
	for _, relay := range []RelayMode{RelayGoroutines, RelayLoop} {
		for _, kind := range []string{"tcp", "unix"} {
			b.Run(relay.String()+"/"+kind, func(b *testing.B) {
				client, proxyClient := clientPair(b, kind)
				proxyServer, server := unixPair(b)
				// A ReadyForQuery first ends the relay's startup scan, as
				// a postmaster's login does; then echo.
				go func() {
					server.Write([]byte{'Z', 0, 0, 0, 5, 'I'})
					io.Copy(server, server)
				}()
				if relay == RelayLoop {
					ls, err := startLoops()
					if err != nil || len(ls) == 0 {
						b.Skipf("no relay loop: %v", err)
					}
					go ls[0].relay(proxyClient, proxyServer, loopHooks{linger: time.Second})
				} else {
					var bufUp, bufDown []byte
					if !splices(proxyClient) {
						bufUp, bufDown = make([]byte, copyBufferSize), make([]byte, copyBufferSize)
					}
					go (&copier{dst: proxyServer, src: proxyClient, buf: bufUp}).run()
					go (&copier{dst: proxyClient, src: proxyServer, buf: bufDown}).run()
				}
				if _, err := io.ReadFull(client, make([]byte, 6)); err != nil {
					b.Fatal(err)
				}
				block := make([]byte, 64<<10)
				back := make([]byte, len(block))
				send := make(chan struct{})
				defer close(send)
				go func() {
					for range send {
						client.Write(block)
					}
				}()
				b.SetBytes(int64(len(block)))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					send <- struct{}{}
					if _, err := io.ReadFull(client, back); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
