// Command relay is an experiment, not part of silo-proxy: a stripped-down
// PostgreSQL session relay used to compare relay designs against
// silo-proxy and PgBouncer in the benchmark harness (bench/run.sh with
// RELAYS=...). It accepts TCP clients, reads the startup packet (answering
// SSLRequest and GSSENCRequest with 'N'), dials one postmaster's Unix
// socket, forwards the startup packet and then relays raw bytes in one of
// these ways:
//
//   - splice: io.Copy in a goroutine per direction, as silo-proxy's relay
//     does; TCPConn.WriteTo and ReadFrom splice through a pipe (two
//     splice(2) calls per chunk, a pipe pair held per direction);
//   - rw: a goroutine per direction with Read and Write on a 16 KiB
//     buffer, so no splice path is taken;
//   - epoll: after the startup packet the two descriptors are handed to a
//     single event-loop thread (epoll, level-triggered, read/write with one
//     shared buffer), the shape of PgBouncer's libevent loop: no goroutine
//     wake-up per message and no buffer held by an idle session;
//   - epollraw: epoll, with the loop's system calls made as raw system
//     calls, so the Go runtime's sysmon thread does not poll every 20 µs
//     for a P held in a system call.
//
// There is no routing, cancel handling, TLS or metrics: the figures bound
// what the relay itself costs. bench/README.md reports the measurements.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// Startup request codes (PostgreSQL's pqcomm.h).
const (
	sslRequestCode    = 80877103
	gssencRequestCode = 80877104
	// maxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacket = 10000
)

// rwBufferSize is the buffer of each direction in rw mode, and the shared
// read buffer of the event loop.
const rwBufferSize = 16 << 10

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to accept clients on")
	backend := flag.String("backend", "", "postmaster Unix socket path (…/.s.PGSQL.5432)")
	mode := flag.String("mode", "splice", "relay mode: splice, rw, epoll or epollraw")
	flag.Parse()
	if *backend == "" {
		log.Fatal("-backend is required")
	}
	var relay func(client *net.TCPConn, server *net.UnixConn)
	switch *mode {
	case "splice":
		relay = relaySplice
	case "rw":
		relay = relayRW
	case "epoll", "epollraw":
		l, err := newLoop(*mode == "epollraw")
		if err != nil {
			log.Fatal(err)
		}
		go l.run()
		relay = l.add
	default:
		log.Fatalf("unknown mode %q", *mode)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("relay mode=%s listening on %s, backend %s", *mode, ln.Addr(), *backend)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	addr := &net.UnixAddr{Name: *backend, Net: "unix"}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			client := c.(*net.TCPConn)
			startup, err := readStartup(client)
			if err != nil {
				client.Close()
				return
			}
			server, err := net.DialUnix("unix", nil, addr)
			if err != nil {
				client.Close()
				return
			}
			if _, err := server.Write(startup); err != nil {
				client.Close()
				server.Close()
				return
			}
			relay(client, server)
		}()
	}
}

// readStartup reads packets until a StartupMessage (or CancelRequest)
// and returns it, refusing encryption requests with 'N'.
func readStartup(c net.Conn) ([]byte, error) {
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n < 8 || n > maxStartupPacket {
			return nil, fmt.Errorf("bad startup packet length %d", n)
		}
		switch binary.BigEndian.Uint32(hdr[4:]) {
		case sslRequestCode, gssencRequestCode:
			if n != 8 {
				return nil, errors.New("bad encryption request")
			}
			if _, err := c.Write([]byte{'N'}); err != nil {
				return nil, err
			}
			continue
		}
		pkt := make([]byte, n)
		copy(pkt, hdr[:])
		if _, err := io.ReadFull(c, pkt[8:]); err != nil {
			return nil, err
		}
		return pkt, nil
	}
}

// relaySplice is silo-proxy's relay: io.Copy on the concrete connection
// types, which splices TCP<->Unix in both directions.
func relaySplice(client *net.TCPConn, server *net.UnixConn) {
	done := make(chan struct{})
	go func() {
		io.Copy(server, client)
		server.CloseWrite()
		close(done)
	}()
	io.Copy(client, server)
	client.CloseWrite()
	<-done
	client.Close()
	server.Close()
}

// relayRW copies with Read and Write on a buffer per direction: the same
// goroutines as relaySplice, without splice.
func relayRW(client *net.TCPConn, server *net.UnixConn) {
	done := make(chan struct{})
	go func() {
		copyRW(server, client)
		server.CloseWrite()
		close(done)
	}()
	copyRW(client, server)
	client.CloseWrite()
	<-done
	client.Close()
	server.Close()
}

func copyRW(dst, src net.Conn) {
	buf := make([]byte, rwBufferSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			return
		}
	}
}
