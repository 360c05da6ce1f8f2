package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/proxy"
)

var failedTx = regexp.MustCompile(`number of failed transactions: (\d+)`)

// pgbench runs pgbench through the proxy and returns its output; it fails
// the test on a non-zero exit.
func (r *proxyRig) pgbench(t testing.TB, db string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(r.srv.Addr().String())
	return runPgbench(t, host, port, r.pw, db, args...)
}

func runPgbench(t testing.TB, host, port, pw, db string, args ...string) string {
	t.Helper()
	cmd := exec.Command("pgbench", append([]string{"-h", host, "-p", port, "-U", fslayout.PostgresUser}, append(args, db)...)...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pw, "PGCONNECT_TIMEOUT=60")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// zeroFailures checks pgbench's report of failed transactions.
func zeroFailures(t testing.TB, out string) {
	t.Helper()
	m := failedTx.FindStringSubmatch(out)
	if m == nil || m[1] != "0" {
		t.Fatalf("pgbench reported failures (or no summary):\n%s", out)
	}
}

func TestProxyPgbench(t *testing.T) {
	e := newEnv(t)
	pwFile, pw := writePassword(t, e)
	r := startRig(t, e, e.Config(Silo("bench", []string{"bench"}, withPassword(pwFile))), pw, proxy.Options{})
	r.pgbench(t, "bench", "-i", "-s", "1")
	out := r.pgbench(t, "bench", "-M", "prepared", "-c", "8", "-T", "10")
	zeroFailures(t, out)
	t.Logf("pgbench through the proxy:\n%s", out)
}

func TestProxyTLS(t *testing.T) {
	e := newEnv(t)
	pwFile, pw := writePassword(t, e)
	cfg := e.Config(Silo("secure", []string{"secure"}, withPassword(pwFile)))
	cert, key := writeTestCert(t, e.MkdirShared("tls"))
	cfg.TLS = config.TLS{Mode: config.TLSRequire, CertFile: cert, KeyFile: key}
	r := startRig(t, e, cfg, pw, proxy.Options{})

	t.Run("psql sslmode=require", func(t *testing.T) {
		cmd := r.psqlCmd("secure", "-c", "SELECT current_database()")
		cmd.Env = append(cmd.Env, "PGSSLMODE=require")
		out, err := cmd.CombinedOutput()
		if err != nil || trimOut(out) != "secure" {
			t.Fatalf("%v %q", err, out)
		}
	})
	t.Run("pgx over TLS, negotiated and direct", func(t *testing.T) {
		for _, extra := range []string{"sslmode=require", "sslmode=require sslnegotiation=direct"} {
			c, err := r.connectErr("secure", "")
			if err == nil {
				c.Close(context.Background())
				t.Fatal("sslmode=disable connected to a tls.mode=require proxy")
			}
			// Later keywords override the dsn's sslmode=disable.
			c, err = r.connectErr("secure", extra)
			if err != nil {
				t.Fatalf("%s: %v", extra, err)
			}
			if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
				t.Fatalf("%s: session is not TLS", extra)
			}
			var one int
			if err := c.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
				t.Fatal(err)
			}
			c.Close(context.Background())
		}
	})
	t.Run("plain connection refused with 08P01", func(t *testing.T) {
		_, err := r.connectErr("secure", "")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "08P01" || !strings.Contains(pgErr.Message, "TLS") {
			t.Fatalf("got %v, want FATAL 08P01 saying TLS is required", err)
		}
		cmd := r.psqlCmd("secure", "-c", "SELECT 1")
		cmd.Env = append(cmd.Env, "PGSSLMODE=disable")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "TLS") {
			t.Fatalf("psql without TLS: %v %q", err, out)
		}
	})
}
