package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

// scrape returns the value of one sample line of the proxy's /metrics,
// e.g. `silo_proxy_config_reloads_total{result="failure"}`, or -1.
func scrape(t testing.TB, admin, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// siloListed reports whether GET /silos lists name.
func siloListed(t testing.TB, admin, name string) bool {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/silos")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(body), `"name": "`+name+`"`)
}

// replaceFile writes data next to path and renames it over path, as
// editors do.
func replaceFile(t testing.TB, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestProxyReload drives `silo-proxy run` through config edits: a silo
// appended while pgbench runs on another, invalid YAML, a removed silo
// with an open session, and SIGHUP.
func TestProxyReload(t *testing.T) {
	e := newEnv(t)
	pwFile, pw := writePassword(t, e)
	base := fmt.Sprintf("defaults:\n  superuser_password_file: %s\nsilos:\n  - name: app\n    databases: [app]\n", pwFile)
	withExtra := base + "  - name: extra\n    databases: [extra]\n"
	pc := e.WriteConfig(base)
	proc := startProxy(t, pc)
	host, port, _ := net.SplitHostPort(pc.Listen)
	dsn := func(db string) string {
		return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=disable connect_timeout=90", host, port, fslayout.PostgresUser, pw, db)
	}
	connect := func(db string) (*pgx.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		return pgx.Connect(ctx, dsn(db))
	}
	header := func() string {
		b, err := os.ReadFile(pc.Path)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		return s[:strings.Index(s, "defaults:")]
	}()

	runPgbench(t, host, port, pw, "app", "-i", "-s", "1")
	bench := exec.Command("pgbench", "-h", host, "-p", port, "-U", fslayout.PostgresUser, "-M", "prepared", "-c", "4", "-T", "10", "app")
	bench.Env = append(os.Environ(), "PGPASSWORD="+pw)
	var benchOut strings.Builder
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	defer bench.Process.Kill()
	time.Sleep(2 * time.Second)

	// Append a silo while pgbench runs: routable within 2s.
	edited := time.Now()
	replaceFile(t, pc.Path, header+withExtra)
	eventually(t, 2*time.Second, "the new silo listed", func() bool { return siloListed(t, pc.Admin, "extra") })
	t.Logf("new silo routable after %v", time.Since(edited))
	c, err := connect("extra")
	if err != nil {
		t.Fatalf("new silo: %v", err)
	}
	var db string
	if err := c.QueryRow(context.Background(), "SELECT current_database()").Scan(&db); err != nil || db != "extra" {
		t.Fatalf("new silo query: %q %v", db, err)
	}
	if err := bench.Wait(); err != nil {
		t.Fatalf("pgbench during the reload: %v\n%s", err, benchOut.String())
	}
	zeroFailures(t, benchOut.String())

	// Invalid YAML: the old config keeps serving, the failure is counted.
	failures := scrape(t, pc.Admin, `silo_proxy_config_reloads_total{result="failure"}`)
	if err := os.WriteFile(pc.Path, []byte(header+"silos: [ {name: broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the failed reload counted", func() bool {
		return scrape(t, pc.Admin, `silo_proxy_config_reloads_total{result="failure"}`) > failures
	})
	for _, name := range []string{"app", "extra"} {
		c2, err := connect(name)
		if err != nil {
			t.Fatalf("%s after an invalid config: %v", name, err)
		}
		c2.Close(context.Background())
	}
	if !strings.Contains(proc.Logs(), "config reload failed") {
		t.Fatalf("the failed reload was not logged:\n%s", proc.Logs())
	}

	// Remove extra while c is open: c keeps working, new connections 3D000.
	replaceFile(t, pc.Path, header+base)
	eventually(t, 10*time.Second, "extra unroutable", func() bool {
		c2, err := connect("extra")
		if err == nil {
			c2.Close(context.Background())
			return false
		}
		var pgErr *pgconn.PgError
		return errors.As(err, &pgErr) && pgErr.Code == "3D000"
	})
	for i := range 3 {
		var n int
		if err := c.QueryRow(context.Background(), "SELECT $1::int", i).Scan(&n); err != nil || n != i {
			t.Fatalf("session of the removed silo: %v", err)
		}
	}
	c.Close(context.Background())
	eventually(t, 60*time.Second, "the removed silo gone", func() bool { return !siloListed(t, pc.Admin, "extra") })
	eventually(t, 10*time.Second, "the removed silo's series deleted", func() bool {
		resp, err := http.Get("http://" + pc.Admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return !strings.Contains(string(body), `silo="extra"`)
	})

	// SIGHUP reloads too.
	successes := scrape(t, pc.Admin, `silo_proxy_config_reloads_total{result="success"}`)
	proc.Cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "SIGHUP reload", func() bool {
		return scrape(t, pc.Admin, `silo_proxy_config_reloads_total{result="success"}`) > successes
	})
}

// TestProxyReloadKeepsRestartOnlySettings: a reload that changes
// state_dir, base_root_dir and postgres.bindir succeeds for everything
// else (a silo added by the same edit serves at once), keeps those three
// at their running values and warns that they apply after a restart.
func TestProxyReloadKeepsRestartOnlySettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pwFile, pw := writePassword(t, e)
	silos := fmt.Sprintf("defaults:\n  superuser_password_file: %s\nsilos:\n  - name: app\n    databases: [app]\n", pwFile)
	pc := e.WriteConfig(silos)
	proc := startProxy(t, pc)
	host, port, _ := net.SplitHostPort(pc.Listen)
	query := func(db string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=disable", host, port, fslayout.PostgresUser, pw, db))
		if err != nil {
			t.Fatalf("connecting to %s: %v", db, err)
		}
		defer c.Close(context.Background())
		var got string
		if err := c.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil {
			t.Fatalf("query on %s: %v", db, err)
		}
		return got
	}
	if got := query("app"); got != "app" {
		t.Fatalf("app: %q", got)
	}

	// Another state_dir, base_root_dir and bindir (a symlink to the same
	// installation, so that the file validates), and a new silo.
	newState, newRoots := filepath.Join(e.Dir, "state2"), filepath.Join(e.Dir, "roots2")
	binLink := filepath.Join(e.Dir, "pgbin")
	if err := os.Symlink(e.Install.BinDir, binLink); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(pc.Path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.NewReplacer(
		"state_dir: "+e.StateDir, "state_dir: "+newState,
		"base_root_dir: "+e.RootsDir, "base_root_dir: "+newRoots,
		"bindir: "+e.Install.BinDir, "bindir: "+binLink,
	).Replace(string(body)) + "  - name: extra\n    databases: [extra]\n"
	successes := scrape(t, pc.Admin, `silo_proxy_config_reloads_total{result="success"}`)
	replaceFile(t, pc.Path, edited)
	eventually(t, 10*time.Second, "the reload counted as a success", func() bool {
		return scrape(t, pc.Admin, `silo_proxy_config_reloads_total{result="success"}`) > successes
	})
	if got := query("extra"); got != "extra" {
		t.Fatalf("extra: %q", got)
	}
	if got := query("app"); got != "app" {
		t.Fatalf("app after the reload: %q", got)
	}
	logs := proc.Logs()
	for _, want := range []string{"apply only after a restart", "state_dir", "base_root_dir", "postgres.bindir"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the proxy log lacks %q:\n%s", want, logs)
		}
	}
	// Everything of the new silo lives under the running directories.
	if _, err := os.Stat(filepath.Join(e.StateDir, "silos", "extra", "data", "PG_VERSION")); err != nil {
		t.Errorf("the added silo's data directory is not under the running state_dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.RootsDir, "extra")); err != nil {
		t.Errorf("the added silo's root is not under the running base_root_dir: %v", err)
	}
	for _, d := range []string{newState, newRoots} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created (%v): the reload applied a restart-only setting", d, err)
		}
	}
}
