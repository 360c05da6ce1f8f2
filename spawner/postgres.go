package spawner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
)

// sqlstateCannotConnectNow is ERRCODE_CANNOT_CONNECT_NOW: the postmaster
// answers it while it starts up, recovers or shuts down.
const sqlstateCannotConnectNow = "57P03"

// probeStartup sends a real StartupMessage to the postmaster's socket and
// reports whether the server is ready for sessions: an authentication
// request means it is (the probe then hangs up, which the server treats as
// a silent EOF during authentication); 57P03 means not yet. Any other
// ErrorResponse also comes from a server past startup (too many
// connections, say), so it counts as ready too.
func probeStartup(socket string, timeout time.Duration) (bool, error) {
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	msg := &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": fslayout.PostgresUser, "database": "postgres", "application_name": "silo-proxy-probe"},
	}
	buf, err := msg.Encode(nil)
	if err != nil {
		return false, err
	}
	if _, err := c.Write(buf); err != nil {
		return false, err
	}
	m, err := pgproto3.NewFrontend(c, c).Receive()
	if err != nil {
		return false, err
	}
	switch m := m.(type) {
	case *pgproto3.ErrorResponse:
		if m.Code == sqlstateCannotConnectNow {
			return false, nil
		}
		return true, nil
	case *pgproto3.AuthenticationSASL, *pgproto3.AuthenticationOk, *pgproto3.AuthenticationMD5Password,
		*pgproto3.AuthenticationCleartextPassword, *pgproto3.AuthenticationGSS:
		return true, nil
	}
	return false, fmt.Errorf("unexpected %T in reply to a startup packet", m)
}

// waitReady waits until the postmaster behind socket is ready, the silo
// ends (exited closes) or ctx is done. Until the socket exists it only
// stats the path, every millisecond; then it probes with a startup packet,
// 2 ms apart backing off to 10 ms (each refused probe costs the starting
// server a fork), and at once when hint closes: the postmaster has logged
// that it is ready.
func waitReady(ctx context.Context, socket string, exited, hint <-chan struct{}) error {
	delay := 2 * time.Millisecond
	for {
		wait := time.Millisecond
		if _, err := os.Stat(socket); err == nil {
			if ready, _ := probeStartup(socket, time.Second); ready {
				return nil
			}
			wait = delay
			delay = min(delay*2, 10*time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-hint:
			t.Stop()
			hint = nil // probe now, then poll as before
		case <-exited:
			t.Stop()
			return errors.New("the silo exited before its postmaster accepted connections")
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// ensureDatabases connects as the superuser over the silo's socket and
// creates the databases of dbs that do not exist. It runs at every start
// (databases added to a silo's list by a reload are created at its next
// start) and after a reload of a running silo.
func ensureDatabases(ctx context.Context, socketDir, password string, dbs []string, log *slog.Logger) error {
	if len(dbs) == 0 {
		return nil
	}
	cc, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return err
	}
	cc.Host = socketDir
	cc.Port = 5432
	cc.User = fslayout.PostgresUser
	cc.Password = password
	cc.Database = "postgres"
	cc.RuntimeParams = map[string]string{"application_name": "silo-proxy"}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connecting as the silo's superuser to create its databases: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database")
	if err != nil {
		return err
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, db := range dbs {
		if slices.Contains(have, db) {
			continue
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
			return fmt.Errorf("creating database %q: %w", db, err)
		}
		log.Info("created database", "database", db)
	}
	return nil
}

// superuserPassword returns the silo superuser's password: the content of
// superuser_password_file when configured (one line; a trailing newline
// is not part of it), else the generated <silo dir>/superuser.password,
// created on first use from 32 random bytes (hex) with mode 0600. The
// file lives outside every silo's view.
func superuserPassword(silo config.Silo, paths config.SiloPaths) (string, error) {
	if f := silo.SuperuserPasswordFile; f != "" {
		return readPasswordFile(f)
	}
	pw, err := readPasswordFile(paths.PasswordFile)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return pw, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	pw = hex.EncodeToString(raw[:])
	if err := writeFileAtomic(paths.PasswordFile, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the generated superuser password: %w", err)
	}
	return pw, nil
}

// provisionPassword makes sure a silo without superuser_password_file has
// its generated password file, creating <state_dir>/silos/<name> (0711)
// when needed. The password exists before the silo's first start, so the
// operator can connect with it as soon as the proxy runs; bootstrap then
// uses the same file.
func provisionPassword(cfg *config.Config, sc config.Silo) error {
	if sc.SuperuserPasswordFile != "" {
		return nil
	}
	paths := cfg.Paths(sc.Name)
	for _, d := range []string{filepath.Join(cfg.StateDir, "silos"), paths.Dir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
	}
	_, err := superuserPassword(sc, paths)
	return err
}

// ReadPassword returns the superuser password of a silo as the spawner
// uses it (superuser_password_file or the generated file), for
// `silo-proxy psql`. It never generates one.
func ReadPassword(cfg *config.Config, silo *config.Silo) (string, error) {
	if silo.SuperuserPasswordFile != "" {
		return readPasswordFile(silo.SuperuserPasswordFile)
	}
	return readPasswordFile(cfg.Paths(silo.Name).PasswordFile)
}

func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("password file %s is empty", path)
	}
	if strings.ContainsAny(pw, "\n\x00") {
		return "", fmt.Errorf("password file %s holds more than one line", path)
	}
	return pw, nil
}

// logTail keeps the last lines a silo logged.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

const logTailLines = 32

func (t *logTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == logTailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:logTailLines-1]
	}
	t.lines = append(t.lines, line)
}

// lastProblem returns the last line that reports an error: a postgres
// FATAL, PANIC or ERROR, or an "error:" of a client program such as initdb.
func (t *logTail) lastProblem() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := len(t.lines) - 1; i >= 0; i-- {
		l := t.lines[i]
		for _, m := range []string{"PANIC:", "FATAL:", "ERROR:", "error:"} {
			if strings.Contains(l, m) {
				return l
			}
		}
	}
	return ""
}

// postgresSeverities map the severity word of a postgres stderr line
// (log_line_prefix "%m [%p] ", then "LEVEL:  message") to slog levels.
// FATAL is a per-session event (a failed login, a terminated backend)
// and stays a warning; only PANIC is an error of the whole server.
var postgresSeverities = []struct {
	word string
	lvl  slog.Level
}{
	{"PANIC:", slog.LevelError},
	{"FATAL:", slog.LevelWarn},
	{"ERROR:", slog.LevelWarn},
	{"WARNING:", slog.LevelWarn},
	{"LOG:", slog.LevelInfo},
	{"NOTICE:", slog.LevelInfo},
	{"INFO:", slog.LevelInfo},
	{"DETAIL:", slog.LevelInfo},
	{"HINT:", slog.LevelInfo},
	{"CONTEXT:", slog.LevelInfo},
	{"STATEMENT:", slog.LevelInfo},
	{"DEBUG", slog.LevelDebug},
}

// postgresLogLevel returns the slog level of a postgres log line and the
// line without the timestamp and pid prefix (slog adds its own time, and
// the pid is the silo's, meaningless on the host).
func postgresLogLevel(line string) (slog.Level, string) {
	if strings.Contains(line, "FATAL:  the database system is starting up") {
		// The answer to our own readiness probes (57P03).
		return slog.LevelDebug, line
	}
	for _, s := range postgresSeverities {
		if i := strings.Index(line, s.word); i >= 0 && i < 64 {
			if j := strings.LastIndex(line[:i], "] "); j >= 0 {
				return s.lvl, line[j+2:]
			}
			return s.lvl, line
		}
	}
	if strings.Contains(line, "error:") {
		return slog.LevelWarn, line
	}
	return slog.LevelInfo, line
}
