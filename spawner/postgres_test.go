package spawner

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
)

// fakePostmaster answers every startup packet on a Unix socket with reply
// (built by the test) and records the startup parameters it saw.
func fakePostmaster(t *testing.T, reply func() pgproto3.BackendMessage) (string, <-chan map[string]string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "probe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, ".s.PGSQL.5432")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	seen := make(chan map[string]string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [4]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				body := make([]byte, binary.BigEndian.Uint32(hdr[:])-4)
				if _, err := io.ReadFull(c, body); err != nil {
					return
				}
				var sm pgproto3.StartupMessage
				if err := sm.Decode(body); err == nil {
					select {
					case seen <- sm.Parameters:
					default:
					}
				}
				buf, _ := reply().Encode(nil)
				c.Write(buf)
			}()
		}
	}()
	return sock, seen
}

func TestProbeStartup(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		reply func() pgproto3.BackendMessage
		ready bool
	}{
		{"scram request", func() pgproto3.BackendMessage {
			return &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}
		}, true},
		{"starting up", func() pgproto3.BackendMessage {
			return &pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P03", Message: "the database system is starting up"}
		}, false},
		{"too many connections", func() pgproto3.BackendMessage {
			return &pgproto3.ErrorResponse{Severity: "FATAL", Code: "53300", Message: "sorry, too many clients already"}
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sock, seen := fakePostmaster(t, tc.reply)
			ready, err := probeStartup(sock, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if ready != tc.ready {
				t.Errorf("ready = %v, want %v", ready, tc.ready)
			}
			params := <-seen
			if params["user"] != "postgres" || params["database"] != "postgres" {
				t.Errorf("probe sent %v", params)
			}
		})
	}
	t.Run("no socket", func(t *testing.T) {
		t.Parallel()
		if ready, err := probeStartup(filepath.Join(t.TempDir(), "none"), time.Second); ready || err == nil {
			t.Errorf("probe of a missing socket = %v, %v", ready, err)
		}
	})
}

func TestWaitReady(t *testing.T) {
	t.Parallel()
	t.Run("ready", func(t *testing.T) {
		t.Parallel()
		sock, _ := fakePostmaster(t, func() pgproto3.BackendMessage { return &pgproto3.AuthenticationOk{} })
		if err := waitReady(context.Background(), sock, nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("silo exits", func(t *testing.T) {
		t.Parallel()
		exited := make(chan struct{})
		close(exited)
		if err := waitReady(context.Background(), filepath.Join(t.TempDir(), "none"), exited, nil); err == nil {
			t.Fatal("waitReady returned nil for a silo that exited")
		}
	})
	t.Run("context", func(t *testing.T) {
		t.Parallel()
		sock, _ := fakePostmaster(t, func() pgproto3.BackendMessage {
			return &pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P03"}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := waitReady(ctx, sock, nil, nil); err != context.DeadlineExceeded {
			t.Fatalf("waitReady on a server that stays in startup = %v, want DeadlineExceeded", err)
		}
	})
}

func TestPostgresLogLevel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		line string
		lvl  slog.Level
		text string
	}{
		{"2026-12-04 20:46:03.962 UTC [2] LOG:  starting PostgreSQL 15", slog.LevelInfo, "LOG:  starting PostgreSQL 15"},
		{"2026-12-04 20:46:03.962 UTC [77] FATAL:  password authentication failed for user \"x\"", slog.LevelWarn, "FATAL:  password authentication failed for user \"x\""},
		{"2026-12-04 20:46:03.962 UTC [2] PANIC:  could not write", slog.LevelError, "PANIC:  could not write"},
		{"2026-12-04 20:46:03.977 UTC [9] FATAL:  the database system is starting up", slog.LevelDebug, "2026-12-04 20:46:03.977 UTC [9] FATAL:  the database system is starting up"},
		{"initdb: error: directory \"x\" exists but is not empty", slog.LevelWarn, "initdb: error: directory \"x\" exists but is not empty"},
		{"creating subdirectories ... ok", slog.LevelInfo, "creating subdirectories ... ok"},
		{"WARNING:  no usable system locales were found", slog.LevelWarn, "WARNING:  no usable system locales were found"},
	}
	for _, tc := range cases {
		lvl, text := postgresLogLevel(tc.line)
		if lvl != tc.lvl || text != tc.text {
			t.Errorf("postgresLogLevel(%q) = %v, %q; want %v, %q", tc.line, lvl, text, tc.lvl, tc.text)
		}
	}
}

func TestLogTailLastProblem(t *testing.T) {
	t.Parallel()
	var tail logTail
	if got := tail.lastProblem(); got != "" {
		t.Errorf("empty tail: %q", got)
	}
	tail.add("LOG:  starting")
	tail.add("FATAL:  could not open file \"postgresql.conf\"")
	tail.add("LOG:  database system is shut down")
	if got := tail.lastProblem(); got != "FATAL:  could not open file \"postgresql.conf\"" {
		t.Errorf("lastProblem = %q", got)
	}
	for i := range 2 * logTailLines {
		tail.add("LOG:  line " + strings.Repeat("x", i%3))
	}
	if got := len(tail.lines); got != logTailLines {
		t.Errorf("tail keeps %d lines, want %d", got, logTailLines)
	}
	if got := tail.lastProblem(); got != "" {
		t.Errorf("a problem older than the tail is still reported: %q", got)
	}
}

func TestSuperuserPassword(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := &config.Config{StateDir: dir}
	paths := cfg.Paths("sales")
	if err := os.MkdirAll(paths.Dir, 0o711); err != nil {
		t.Fatal(err)
	}
	silo := config.Silo{Name: "sales"}
	pw, err := superuserPassword(silo, paths)
	if err != nil {
		t.Fatal(err)
	}
	if len(pw) != 64 || strings.Trim(pw, "0123456789abcdef") != "" {
		t.Errorf("generated password %q is not 32 random bytes in hex", pw)
	}
	st, err := os.Stat(paths.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("password file mode %v, want 0600", st.Mode().Perm())
	}
	again, err := superuserPassword(silo, paths)
	if err != nil || again != pw {
		t.Errorf("second call = %q, %v; want the stored %q", again, err, pw)
	}
	if got, err := ReadPassword(cfg, &silo); err != nil || got != pw {
		t.Errorf("ReadPassword = %q, %v", got, err)
	}

	own := filepath.Join(dir, "own.pw")
	if err := os.WriteFile(own, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	silo.SuperuserPasswordFile = own
	if got, err := superuserPassword(silo, paths); err != nil || got != "s3cret" {
		t.Errorf("superuser_password_file: %q, %v", got, err)
	}
	for name, content := range map[string]string{"empty": "\n", "two lines": "a\nb\n"} {
		os.WriteFile(own, []byte(content), 0o600)
		if got, err := superuserPassword(silo, paths); err == nil {
			t.Errorf("%s password file accepted as %q", name, got)
		}
	}
	silo.SuperuserPasswordFile = ""
	other := config.Silo{Name: "fresh"}
	if _, err := ReadPassword(cfg, &other); err == nil {
		t.Error("ReadPassword generated or found a password for a silo that never started")
	}
}

func TestPostmasterCommand(t *testing.T) {
	t.Parallel()
	silo := config.Silo{Name: "sales", Settings: config.Settings{PostgresSettings: map[string]string{
		"shared_buffers":   "32MB",
		"listen_addresses": "*",
		"port":             "5433",
	}}}
	inst := fslayoutInstall()
	c := postmasterCommand(silo, inst)
	args := strings.Join(c.Args, " ")
	want := "postgres -D /var/lib/postgresql/data -c cluster_name=sales -c listen_addresses=* -c port=5433 -c shared_buffers=32MB -c listen_addresses= -c unix_socket_directories=/run/postgresql -c port=5432"
	if args != want {
		t.Errorf("argv = %q\nwant   %q", args, want)
	}
	if c.Path != "/usr/lib/postgresql/15/bin/postgres" {
		t.Errorf("path = %q", c.Path)
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e, "_SILO") || strings.HasPrefix(e, "PGPASSWORD") {
			t.Errorf("postmaster environment leaks %q", e)
		}
	}
}

func fslayoutInstall() fslayout.Install {
	return fslayout.Install{BinDir: "/usr/lib/postgresql/15/bin"}
}

func TestDatabaseMarkerSkipsKnownDatabases(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := &hostProcess{
		log:       slog.New(slog.DiscardHandler),
		socketDir: filepath.Join(dir, "no-such-socket-dir"),
		password:  "x",
		dbMarker:  filepath.Join(dir, "databases"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Without a record every database is checked: the connection to the
	// (absent) server fails.
	if err := p.ensureDatabases(ctx, []string{"a"}); err == nil {
		t.Fatal("ensureDatabases without a record did not try to connect")
	}
	if err := os.WriteFile(p.dbMarker, []byte(`["a","b"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.ensureDatabases(ctx, []string{"b", "a"}); err != nil {
		t.Errorf("recorded databases were checked again: %v", err)
	}
	if err := p.ensureDatabases(ctx, nil); err != nil {
		t.Errorf("no databases: %v", err)
	}
	if err := p.ensureDatabases(ctx, []string{"a", "c"}); err == nil {
		t.Error("a database missing from the record was not checked")
	}
	os.WriteFile(p.dbMarker, []byte(`not json`), 0o600)
	if got := readDatabaseMarker(p.dbMarker); got != nil {
		t.Errorf("a corrupt record reads as %q, want nothing", got)
	}
}

func TestProvisionPassword(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{StateDir: filepath.Join(t.TempDir(), "state")}
	silo := config.Silo{Name: "sales"}
	if err := provisionPassword(cfg, silo); err != nil {
		t.Fatal(err)
	}
	paths := cfg.Paths("sales")
	st, err := os.Stat(paths.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o711 {
		t.Errorf("silo directory mode %v, want 0711", st.Mode().Perm())
	}
	pw, err := ReadPassword(cfg, &silo)
	if err != nil {
		t.Fatalf("no password after provisioning: %v", err)
	}
	if err := provisionPassword(cfg, silo); err != nil {
		t.Fatal(err)
	}
	if again, _ := ReadPassword(cfg, &silo); again != pw {
		t.Error("provisioning twice replaced the password")
	}

	own := config.Silo{Name: "own", Settings: config.Settings{SuperuserPasswordFile: "/nonexistent/pw"}}
	if err := provisionPassword(cfg, own); err != nil {
		t.Fatalf("a silo with superuser_password_file: %v", err)
	}
	if _, err := os.Stat(cfg.Paths("own").PasswordFile); err == nil {
		t.Error("a password was generated for a silo that has superuser_password_file")
	}
}
