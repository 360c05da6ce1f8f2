package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/proxy"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// proxyRig is a proxy.Server in the test process in front of a real
// spawner.Manager, so tests can reach both the wire and the internals
// (metrics, silo states).
type proxyRig struct {
	e   *testEnv
	cfg *config.Config
	mgr *spawner.Manager
	srv *proxy.Server
	pw  string // superuser password of every silo of the rig
}

// withPassword points a silo at the rig's shared superuser password file,
// so clients know the password before the silo's first start.
func withPassword(path string) func(*config.Silo) {
	return func(s *config.Silo) { s.SuperuserPasswordFile = path }
}

// writePassword writes a superuser password file for the env's silos.
func writePassword(t testing.TB, e *testEnv) (path, pw string) {
	t.Helper()
	pw = "proxy-test-" + fmt.Sprint(time.Now().UnixNano())
	path = filepath.Join(e.Dir, "superuser.pw")
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pw
}

// startRig starts the Manager and the proxy for cfg. Both are shut down
// when the test ends.
func startRig(t testing.TB, e *testEnv, cfg *config.Config, pw string, opts proxy.Options) *proxyRig {
	t.Helper()
	metrics := proxy.NewMetrics()
	mgr := e.startManager(cfg, metrics)
	opts.Logger = e.Logger().With("component", "proxy")
	opts.Metrics = metrics
	srv, err := proxy.New(cfg, mgr, opts)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("proxy Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		srv.Shutdown(ctx, spawner.StopFast, 0)
	})
	return &proxyRig{e: e, cfg: cfg, mgr: mgr, srv: srv, pw: pw}
}

// dsn is a libpq connection string for db through the proxy's TCP port.
func (r *proxyRig) dsn(db, extra string) string {
	host, port, _ := net.SplitHostPort(r.srv.Addr().String())
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=disable connect_timeout=60 %s",
		host, port, fslayout.PostgresUser, r.pw, db, extra)
}

// connect opens a pgx session to db through the proxy; it is closed when
// the test ends.
func (r *proxyRig) connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	c, err := r.connectErr(db, "")
	if err != nil {
		t.Fatalf("connecting to %s through the proxy: %v", db, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (r *proxyRig) connectErr(db, extra string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	return pgx.Connect(ctx, r.dsn(db, extra))
}

// psqlCmd builds a psql command through the proxy's TCP port.
func (r *proxyRig) psqlCmd(db string, args ...string) *exec.Cmd {
	host, port, _ := net.SplitHostPort(r.srv.Addr().String())
	cmd := exec.Command("psql", append([]string{"-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", host, "-p", port, "-U", fslayout.PostgresUser, "-d", db}, args...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+r.pw, "PGCONNECT_TIMEOUT=60")
	return cmd
}

// metric returns the value of the series of family name whose labels
// include want, and whether it exists.
func (r *proxyRig) metric(t testing.TB, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := r.srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// cancelPacket is a CancelRequest for pid and secret.
func cancelPacket(pid uint32, secret []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(12+len(secret)))
	b = binary.BigEndian.AppendUint32(b, 1234<<16|5678)
	b = binary.BigEndian.AppendUint32(b, pid)
	return append(b, secret...)
}

// queryActive reports whether backend pid of the silo is running a query,
// as seen from another session of the same silo.
func queryActive(t testing.TB, observer *pgx.Conn, pid uint32) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int
	if err := observer.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'", int32(pid)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// writeTestCert writes a self-signed certificate for 127.0.0.1.
func writeTestCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "silo-proxy test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
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
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// siloOf asks a session which silo it reached: each silo is its own
// cluster, with its own system identifier.
func systemID(t testing.TB, c *pgx.Conn) string {
	t.Helper()
	var id string
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func trimOut(b []byte) string { return strings.TrimSpace(string(b)) }
