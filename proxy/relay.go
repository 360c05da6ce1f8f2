package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
)

// copyBufferSize is the buffer of relays the kernel cannot splice
// (Unix-to-Unix and TLS sessions) and of the startup phase.
const copyBufferSize = 32 << 10

// copyBuffers recycles copy buffers so that a session costs no 32 KiB
// allocation per direction.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, copyBufferSize)
	return &b
}}

// closeWriter is a connection that can half-close: *net.TCPConn,
// *net.UnixConn and *tls.Conn.
type closeWriter interface{ CloseWrite() error }

// copier is one direction of a relayed session. A named type, as in
// net/http/httputil, so its goroutine is recognisable in stack dumps.
//
// dst and src hold the concrete connection types (*net.TCPConn,
// *net.UnixConn or *tls.Conn) behind the net.Conn interface, never a
// wrapper, so io.CopyBuffer finds TCPConn.WriteTo or TCPConn.ReadFrom and
// the kernel splices TCP<->Unix sessions without copying through user
// space. buf is used only when no splice path applies, and is nil then
// otherwise. Bytes are counted from the copy's return value.
type copier struct {
	dst, src net.Conn
	buf      []byte
	n        int64
	err      error
}

// run copies until src reports EOF or an error. On EOF it half-closes dst,
// passing the end of the stream on while the other direction continues;
// on an error it closes both ends so that the other direction stops too.
func (c *copier) run() {
	c.n, c.err = io.CopyBuffer(c.dst, c.src, c.buf)
	if c.err == nil {
		closeWrite(c.dst)
		return
	}
	c.dst.Close()
	c.src.Close()
}

// closeWrite half-closes c. A *tls.Conn sends close_notify and then
// half-closes the TCP stream under it, since tls.Conn.CloseWrite does not.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		tc.CloseWrite()
		if cw, ok := tc.NetConn().(closeWriter); ok {
			cw.CloseWrite()
		}
		return
	}
	if cw, ok := c.(closeWriter); ok {
		cw.CloseWrite()
	}
}

// splices reports whether io.Copy between the client connection and a
// postmaster's Unix socket reaches a kernel splice path in both
// directions: TCPConn.WriteTo splices into a *net.UnixConn, and
// TCPConn.ReadFrom splices from one. Unix-to-Unix and TLS sessions copy
// through a buffer.
func splices(client net.Conn) bool {
	_, ok := client.(*net.TCPConn)
	return ok
}

func getBuffer() *[]byte  { return copyBuffers.Get().(*[]byte) }
func putBuffer(b *[]byte) { copyBuffers.Put(b) }
