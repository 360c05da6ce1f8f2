package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/silo-proxy/silo-proxy/config"
)

// writeSelfSignedCert writes a fresh self-signed key pair for commonName
// into dir and returns the file paths.
func writeSelfSignedCert(t *testing.T, dir, commonName string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func tlsConfig(t *testing.T, mode config.TLSMode) *config.Config {
	cfg := testConfig(t, false)
	cfg.TLS.Mode = mode
	cfg.TLS.CertFile, cfg.TLS.KeyFile = writeSelfSignedCert(t, t.TempDir(), "first")
	return cfg
}

func connectErr(t *testing.T, srv *Server, extra string) (*pgconn.PgConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgconn.Connect(ctx, strings.Replace(connString(srv, "a", ""), "sslmode=disable", extra, 1))
}

func TestTLS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode     config.TLSMode
		sslmode  string
		wantTLS  bool
		sqlstate string
	}{
		{config.TLSAllow, "sslmode=require", true, ""},
		{config.TLSAllow, "sslmode=disable", false, ""},
		{config.TLSAllow, "sslmode=require sslnegotiation=direct", true, ""},
		{config.TLSRequire, "sslmode=require", true, ""},
		{config.TLSRequire, "sslmode=disable", false, "08P01"},
		{config.TLSDisable, "sslmode=prefer", false, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode)+" "+tt.sslmode, func(t *testing.T) {
			t.Parallel()
			env := startEnv(t, tlsConfig(t, tt.mode), Options{})
			c, err := connectErr(t, env.srv, tt.sslmode)
			if tt.sqlstate != "" {
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != tt.sqlstate || pgErr.Severity != "FATAL" {
					t.Fatalf("got %v, want FATAL %s", err, tt.sqlstate)
				}
				if !strings.Contains(pgErr.Message, "TLS") {
					t.Fatalf("message %q does not say TLS is required", pgErr.Message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(context.Background())
			_, isTLS := c.Conn().(*tls.Conn)
			if isTLS != tt.wantTLS {
				t.Fatalf("TLS %v, want %v", isTLS, tt.wantTLS)
			}
			if got := queryText(t, c, "encrypted?"); got != "encrypted?" {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestDirectTLSRequiresALPN(t *testing.T) {
	t.Parallel()
	env := startEnv(t, tlsConfig(t, config.TLSAllow), Options{})
	for _, tc := range []struct {
		alpn []string
		ok   bool
	}{{[]string{"postgresql"}, true}, {nil, false}, {[]string{"http/1.1"}, false}} {
		c, err := tls.Dial("tcp", env.srv.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: tc.alpn})
		if err != nil {
			if tc.ok {
				t.Fatalf("ALPN %v: %v", tc.alpn, err)
			}
			continue
		}
		c.Write(startupPacket(ProtocolVersion30, "user", "u", "database", "a"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = frontendOf(c).Receive()
		if tc.ok && err != nil {
			t.Fatalf("ALPN %v: %v", tc.alpn, err)
		}
		if !tc.ok && err == nil {
			t.Fatalf("ALPN %v: direct TLS accepted", tc.alpn)
		}
		c.Close()
	}
	if got := testutil.ToFloat64(env.srv.Metrics().connections.WithLabelValues("", resultTLSError)); got < 1 {
		t.Fatalf("tls_error not counted: %v", got)
	}
}

func TestTLSMinVersion(t *testing.T) {
	t.Parallel()
	env := startEnv(t, tlsConfig(t, config.TLSAllow), Options{})
	_, err := tls.Dial("tcp", env.srv.Addr().String(), &tls.Config{
		InsecureSkipVerify: true, NextProtos: []string{"postgresql"}, MaxVersion: tls.VersionTLS11,
	})
	if err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

// TestCertificateReload checks that Reload swaps the presented
// certificate for new handshakes.
func TestCertificateReload(t *testing.T) {
	t.Parallel()
	cfg := tlsConfig(t, config.TLSAllow)
	var next *config.Config
	env := startEnv(t, cfg, Options{LoadConfig: func(string) (*config.Config, error) { return next, nil }})
	subject := func() string {
		c, err := tls.Dial("tcp", env.srv.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"postgresql"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := subject(); got != "first" {
		t.Fatalf("CN %q", got)
	}
	cp := *cfg
	cp.TLS.CertFile, cp.TLS.KeyFile = writeSelfSignedCert(t, t.TempDir(), "second")
	next = &cp
	if err := env.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := subject(); got != "second" {
		t.Fatalf("CN after reload %q", got)
	}
	// A broken key pair fails the reload and keeps the certificate.
	bad := cp
	bad.TLS.KeyFile = filepath.Join(t.TempDir(), "missing.key")
	next = &bad
	if err := env.srv.Reload(); err == nil {
		t.Fatal("reload with a missing key succeeded")
	}
	if got := subject(); got != "second" {
		t.Fatalf("CN after failed reload %q", got)
	}
}

func TestNewRejectsTLSWithoutCertificate(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, false)
	cfg.TLS = config.TLS{Mode: config.TLSRequire, CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}
	if _, err := New(cfg, newFakeSilos(nil), Options{}); err == nil {
		t.Fatal("New accepted tls.mode require without a loadable certificate")
	}
}
