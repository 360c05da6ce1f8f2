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

// TestCopierCountsAndHalfCloses relays client->server over TCP->Unix (the
// splice path) and Unix->Unix (the buffered path): every byte arrives, the
// count is exact, and the source's EOF becomes a half-close of the
// destination while the other direction stays usable.
func TestCopierCountsAndHalfCloses(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"tcp", "unix"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var client, proxyClient net.Conn
			if kind == "tcp" {
				client, proxyClient = tcpPair(t)
			} else {
				client, proxyClient = unixPair(t)
			}
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
// 64 KiB blocks through TCP->Unix (spliced) to an echoing server and reads
// them back through Unix->TCP.
func BenchmarkRelay(b *testing.B) {
	for _, kind := range []string{"tcp", "unix"} {
		b.Run(kind, func(b *testing.B) {
			var client, proxyClient net.Conn
			if kind == "tcp" {
				client, proxyClient = tcpPair(b)
			} else {
				client, proxyClient = unixPair(b)
			}
			proxyServer, server := unixPair(b)
			go io.Copy(server, server) // echo, as a postmaster answering
			var bufUp, bufDown []byte
			if !splices(proxyClient) {
				bufUp, bufDown = make([]byte, copyBufferSize), make([]byte, copyBufferSize)
			}
			up := &copier{dst: proxyServer, src: proxyClient, buf: bufUp}
			down := &copier{dst: proxyClient, src: proxyServer, buf: bufDown}
			go up.run()
			go down.run()
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
