package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// alpnPostgreSQL is the ALPN protocol PostgreSQL 17 registers and requires
// for direct TLS connections.
const alpnPostgreSQL = "postgresql"

// certStore holds the certificate presented to clients. GetCertificate
// reads it through an atomic pointer so a reload swaps the certificate for
// new handshakes without touching established sessions.
type certStore struct {
	cert atomic.Pointer[tls.Certificate]
}

// load reads the key pair and, on success, makes it the one presented.
// On failure the previous certificate stays.
func (c *certStore) load(certFile, keyFile string) error {
	if certFile == "" || keyFile == "" {
		return errors.New("tls: cert_file and key_file are required when tls.mode is not disable")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("tls: loading %s and %s: %w", certFile, keyFile, err)
	}
	c.cert.Store(&cert)
	return nil
}

func (c *certStore) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert := c.cert.Load()
	if cert == nil {
		return nil, errors.New("tls: no certificate loaded")
	}
	return cert, nil
}

// serverConfig is the TLS configuration of client connections. ALPN offers
// only "postgresql": a client that offers ALPN must offer that one (the Go
// server then fails the handshake with no_application_protocol otherwise),
// and direct-TLS clients must offer it, which the session checks.
func (c *certStore) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.getCertificate,
		NextProtos:     []string{alpnPostgreSQL},
	}
}

// prefixConn replays bytes already read from a connection before reading
// from it again. Direct TLS needs it: the proxy recognises a ClientHello
// only after reading its first bytes, which then belong to the handshake.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite passes half-closes through to the wrapped connection, so a
// *tls.Conn over a prefixConn still half-closes its TCP stream.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
