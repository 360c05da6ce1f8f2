// Package integration holds the tests that need root and a real PostgreSQL
// installation: silos started in real namespaces, attacked from inside,
// and the proxy in front of them. Every test skips with a reason when the
// machine cannot run it (not root, no postgres), except that with CI=true a
// missing PostgreSQL fails the run instead of skipping it.
//
// The harness offers two ways to run silos:
//
//   - in process: startManager drives a spawner.Manager from the test
//     binary, which re-executes itself as silo-init (see init below);
//   - as a subprocess: startServe runs the test binary as a minimal
//     supervisor (for kill -9 tests), and startProxy runs the real
//     `silo-proxy run --config` built once by buildBinary.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/proxy"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// The Manager must satisfy the proxy's view of the silo lifecycle.
var _ proxy.Silos = (*spawner.Manager)(nil)

// envServe switches the test binary into serve mode (see serveMain).
const envServe = "SILO_IT_SERVE_CONFIG"

func init() {
	if len(os.Args) > 1 && os.Args[1] == spawner.InitArg {
		runtime.LockOSThread()
		spawner.InitMain()
	}
	if p := os.Getenv(envServe); p != "" {
		os.Exit(serveMain(p))
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// needRoot skips unless the test runs as root: silos map a range of 65536
// host ids, which needs CAP_SETUID and CAP_SETGID.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: silos map a range of 65536 host uids (run the suite with sudo)")
	}
	if mode, why := spawner.DetectMode(); mode != spawner.ModePrivileged {
		t.Skipf("silos cannot run privileged here: %s", why)
	}
}

// needPostgres returns the PostgreSQL installation the tests use:
// SILO_TEST_PG_BINDIR, else what postgres.bindir: auto finds. Without
// one the test skips, or fails when CI=true.
func needPostgres(t testing.TB) fslayout.Install {
	t.Helper()
	bindir := os.Getenv("SILO_TEST_PG_BINDIR")
	if bindir == "" {
		bindir = config.BinDirAuto
	}
	inst, err := fslayout.FindInstall(bindir)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but no PostgreSQL server installation: %v", err)
		}
		t.Skipf("no PostgreSQL server installation (set SILO_TEST_PG_BINDIR or install postgresql): %v", err)
	}
	return inst
}

// needSilos combines needRoot and needPostgres.
func needSilos(t testing.TB) fslayout.Install {
	t.Helper()
	needRoot(t)
	return needPostgres(t)
}

// testEnv is one test's private world: a state_dir, a base_root_dir and a
// scratch directory, all below one temporary directory that every silo
// uid may traverse (mode 0755, unlike t.TempDir's 0700: a silo's init runs
// as an unprivileged host uid and must reach its bind sources).
type testEnv struct {
	t        testing.TB
	Dir      string
	StateDir string
	RootsDir string
	Install  fslayout.Install
	Log      *logBuffer
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	inst := needSilos(t)
	dir, err := os.MkdirTemp("", "silo-it-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{
		t:        t,
		Dir:      dir,
		StateDir: filepath.Join(dir, "state"),
		RootsDir: filepath.Join(dir, "roots"),
		Install:  inst,
		Log:      &logBuffer{},
	}
	t.Cleanup(func() {
		// Registered first, so it runs after every proxy and Manager of
		// the test has been stopped or killed.
		e.sweepCgroups()
		if t.Failed() || os.Getenv("SILO_IT_VERBOSE") != "" {
			t.Logf("spawner log:\n%s", e.Log.String())
		}
		os.RemoveAll(dir)
	})
	return e
}

// sweepCgroups removes the cgroups of the test's proxy instance (its
// state_dir) that a killed proxy left, and fails the test if any remain: a
// test run must leave no cgroup directory behind. A silo of a proxy that
// was just killed may take a moment to leave its cgroup, and the proxy to
// release the state_dir lock, so it tries again for a while.
func (e *testEnv) sweepCgroups() {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		remaining, err := spawner.SweepCgroups(e.StateDir, e.Logger())
		if err == nil && len(remaining) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Errorf("cgroups of the test's proxy remain: %q (%v)", remaining, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Logger returns a logger writing into the test's log buffer, printed
// when the test fails.
func (e *testEnv) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// MkdirShared creates a directory below the test's dir that silo uids may
// traverse and read (0755), for use as a bind source.
func (e *testEnv) MkdirShared(name string) string {
	e.t.Helper()
	p := filepath.Join(e.Dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// Silo returns a silo with the built-in settings, modified by opts.
func Silo(name string, dbs []string, opts ...func(*config.Silo)) config.Silo {
	s := config.Silo{Name: name, Databases: dbs, Settings: config.BuiltinSettings(), Origin: "test"}
	s.StartTimeout = 60 * time.Second
	for _, o := range opts {
		o(&s)
	}
	return s
}

// Config builds a resolved config directly (the way config.Load returns
// one) for the given silos.
func (e *testEnv) Config(silos ...config.Silo) *config.Config {
	return &config.Config{
		Path:        filepath.Join(e.Dir, "config.yaml"),
		Listen:      config.Listen{Address: "127.0.0.1:0"},
		Admin:       config.Admin{Address: "127.0.0.1:0"},
		TLS:         config.TLS{Mode: config.TLSDisable},
		Postgres:    config.Postgres{BinDir: e.Install.BinDir},
		StateDir:    e.StateDir,
		BaseRootDir: e.RootsDir,
		Defaults:    config.BuiltinSettings(),
		Silos:       silos,
	}
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ProxyConfig is a config file written by WriteConfig.
type ProxyConfig struct {
	Path   string
	Listen string // client address
	Admin  string // admin HTTP address
}

// WriteConfig writes a config file for this env: free listen and admin
// ports, its state_dir and base_root_dir, postgres.bindir, then body (the
// defaults: and silos: sections, in YAML).
func (e *testEnv) WriteConfig(body string) ProxyConfig {
	e.t.Helper()
	pc := ProxyConfig{Path: filepath.Join(e.Dir, "config.yaml"), Listen: freeAddr(e.t), Admin: freeAddr(e.t)}
	text := fmt.Sprintf("listen:\n  address: %s\nadmin:\n  address: %s\npostgres:\n  bindir: %s\nstate_dir: %s\nbase_root_dir: %s\n%s",
		pc.Listen, pc.Admin, e.Install.BinDir, e.StateDir, e.RootsDir, body)
	if err := os.WriteFile(pc.Path, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return pc
}

// LoadConfig loads a config file with the config package.
func (e *testEnv) LoadConfig(path string) *config.Config {
	e.t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		e.t.Fatalf("loading %s: %v", path, err)
	}
	return cfg
}

// startManager runs a Manager for cfg in the test process; it is shut
// down (fast) when the test ends.
func (e *testEnv) startManager(cfg *config.Config, obs spawner.Observer) *spawner.Manager {
	e.t.Helper()
	return e.startManagerOpts(cfg, spawner.Options{Observer: obs})
}

// startManagerOpts is startManager with options; the logger is the test's.
func (e *testEnv) startManagerOpts(cfg *config.Config, opts spawner.Options) *spawner.Manager {
	e.t.Helper()
	opts.Logger = e.Logger()
	m, err := spawner.New(cfg, opts)
	if err != nil {
		e.t.Fatalf("spawner.New: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx, spawner.StopFast); err != nil {
			e.t.Errorf("Shutdown: %v", err)
		}
	})
	return m
}

// startAll starts the named silos in parallel and fails the test if any
// does not come up.
func startAll(t testing.TB, m *spawner.Manager, names ...string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			errs[i] = m.Start(ctx, n)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("starting silo %s: %v", names[i], err)
		}
	}
}

// status returns the named silo's status.
func status(t testing.TB, m *spawner.Manager, name string) spawner.Status {
	t.Helper()
	for _, s := range m.Statuses() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("silo %s not in Statuses()", name)
	return spawner.Status{}
}

// siloPassword reads the silo's superuser password the way the spawner does.
func siloPassword(t testing.TB, cfg *config.Config, silo string) string {
	t.Helper()
	s := cfg.Silo(silo)
	if s == nil {
		t.Fatalf("silo %s not in the config", silo)
	}
	pw, err := spawner.ReadPassword(cfg, s)
	if err != nil {
		t.Fatalf("reading the password of silo %s: %v", silo, err)
	}
	return pw
}

// connectSilo opens a superuser session to db over the silo's own socket
// (not through the proxy); it is closed when the test ends.
func connectSilo(t testing.TB, cfg *config.Config, silo, db string) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cc.Host = cfg.Paths(silo).Run
	cc.Port = 5432
	cc.User = fslayout.PostgresUser
	cc.Password = siloPassword(t, cfg, silo)
	cc.Database = db
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatalf("connecting to silo %s database %s: %v", silo, db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// psql runs one statement with psql over the silo's socket and returns
// its unaligned, tuples-only output.
func psql(t testing.TB, cfg *config.Config, silo, db, sql string) string {
	t.Helper()
	out, err := psqlErr(cfg, silo, db, sql, siloPassword(t, cfg, silo))
	if err != nil {
		t.Fatalf("psql on silo %s: %v\n%s", silo, err, out)
	}
	return strings.TrimSpace(out)
}

func psqlErr(cfg *config.Config, silo, db, sql, password string) (string, error) {
	cmd := exec.Command("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", cfg.Paths(silo).Run, "-p", "5432", "-U", fslayout.PostgresUser, "-d", db, "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=20")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// siloShell runs script with /bin/sh inside the silo as the postgres user,
// through COPY ... FROM PROGRAM on conn, and returns its output lines
// (stdout and stderr) with the exit status appended as "exit=N". The CSV
// format with control characters as delimiter and quote keeps every byte
// of the output as is.
func siloShell(t testing.TB, conn *pgx.Conn, script string) []string {
	t.Helper()
	out, err := siloShellErr(conn, "{ "+script+"\n} 2>&1; echo exit=$?")
	if err != nil {
		t.Fatalf("COPY FROM PROGRAM %q: %v", script, err)
	}
	return out
}

func siloShellErr(conn *pgx.Conn, script string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE IF NOT EXISTS shell_out(n serial, line text); TRUNCATE shell_out"); err != nil {
		return nil, err
	}
	q := "COPY shell_out(line) FROM PROGRAM " + quoteLiteral(script) + " WITH (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')"
	if _, err := conn.Exec(ctx, q); err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT coalesce(line, '') FROM shell_out ORDER BY n")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// hostProc is a process as seen in the host's /proc.
type hostProc struct {
	Pid, PPid int
	UID       int
	Comm      string
	PidNS     string // readlink of /proc/<pid>/ns/pid
}

// hostProcs scans /proc.
func hostProcs() []hostProc {
	ents, _ := os.ReadDir("/proc")
	var out []hostProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p := hostProc{Pid: pid, UID: -1}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			f := strings.Fields(v)
			switch k {
			case "Name":
				p.Comm = strings.TrimSpace(v)
			case "PPid":
				p.PPid, _ = strconv.Atoi(strings.TrimSpace(v))
			case "Uid":
				if len(f) > 1 {
					p.UID, _ = strconv.Atoi(f[1])
				}
			}
		}
		p.PidNS, _ = os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid"))
		out = append(out, p)
	}
	return out
}

// pidNS returns the pid namespace of pid, as readlink of /proc/pid/ns/pid.
func pidNS(t testing.TB, pid int) string {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatalf("pid namespace of %d: %v", pid, err)
	}
	return ns
}

// procUID returns the effective host uid of pid.
func procUID(t testing.TB, pid int) int {
	t.Helper()
	for _, p := range hostProcs() {
		if p.Pid == pid {
			return p.UID
		}
	}
	t.Fatalf("no process %d", pid)
	return -1
}

// mountinfo returns the host's mount table as the test process sees it.
func mountinfo(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recorder is an Observer that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}

func (r *recorder) StateChanged(silo string, from, to spawner.State) {
	r.add(fmt.Sprintf("%s %s->%s", silo, from, to))
}

func (r *recorder) SiloStarted(silo string, reason spawner.StartReason, took time.Duration) {
	r.add(fmt.Sprintf("%s started %s", silo, reason))
}

func (r *recorder) SiloExited(silo string, clean bool) {
	r.add(fmt.Sprintf("%s exited clean=%v", silo, clean))
}

// has reports whether an event equal to e was recorded.
func (r *recorder) has(e string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.events {
		if x == e {
			return true
		}
	}
	return false
}

// copyTestBinary copies the running test binary into dir with mode 0755,
// so that another uid may execute it (go test builds it in a 0700
// directory).
func copyTestBinary(t testing.TB, dir string) string {
	t.Helper()
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	p := filepath.Join(dir, "silo-it.test")
	dst, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// ---- the silo-proxy binary -------------------------------------------

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// buildBinary builds cmd/silo-proxy once per test run into a directory
// every uid may traverse, and returns its path.
func buildBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "silo-it-bin-")
		if binErr != nil {
			return
		}
		os.Chmod(binDir, 0o755)
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			gobin = "go"
		}
		binPath = filepath.Join(binDir, "silo-proxy")
		cmd := exec.Command(gobin, "build", "-o", binPath, "github.com/silo-proxy/silo-proxy/cmd/silo-proxy")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/silo-proxy: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// hasCommand reports whether the built silo-proxy knows a subcommand.
func hasCommand(t testing.TB, name string) bool {
	t.Helper()
	out, _ := exec.Command(buildBinary(t), "help").CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// child is a process started by the harness, with its output captured.
type child struct {
	Cmd *exec.Cmd
	Out *logBuffer
}

// Logs returns everything the child wrote so far.
func (c *child) Logs() string { return c.Out.String() }

// startProxy runs `silo-proxy run --config pc.Path` and waits for its
// /readyz. It is stopped with SIGTERM (then SIGKILL) when the test ends,
// and its output is logged if the test failed.
func startProxy(t testing.TB, pc ProxyConfig, extraArgs ...string) *child {
	t.Helper()
	bin := buildBinary(t)
	if !hasCommand(t, "run") {
		t.Skip("silo-proxy has no run command yet")
	}
	c := &child{Out: &logBuffer{}}
	c.Cmd = exec.Command(bin, append([]string{"run", "--config", pc.Path}, extraArgs...)...)
	c.Cmd.Stdout = c.Out
	c.Cmd.Stderr = c.Out
	if err := c.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		c.Cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		c.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			c.Cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("silo-proxy output:\n%s", c.Logs())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + pc.Admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		select {
		case <-exited:
			t.Fatalf("silo-proxy run exited before it was ready:\n%s", c.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("silo-proxy not ready after 60s:\n%s", c.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serveReport is what serve mode prints once its silos run.
type serveReport struct {
	Pid      int              `json:"pid"`
	Statuses []spawner.Status `json:"statuses"`
}

// startServe runs the test binary in serve mode on cfgPath: a bare
// spawner.Manager that starts every silo of the config, prints a
// serveReport line and waits to be killed. The silos' init processes are
// children of that process, so killing it tests what happens to silos
// whose proxy dies.
func startServe(t testing.TB, cfgPath string) (*child, serveReport) {
	t.Helper()
	return startServeAs(t, cfgPath, os.Args[0], nil)
}

// startServeAs is startServe running binary (a copy of the test binary
// that cred may execute) with the credentials cred, nil for the test's own.
func startServeAs(t testing.TB, cfgPath, binary string, cred *syscall.Credential) (*child, serveReport) {
	t.Helper()
	c := &child{Out: &logBuffer{}}
	c.Cmd = exec.Command(binary, "-test.run=^$")
	c.Cmd.Env = append(os.Environ(), envServe+"="+cfgPath)
	if cred != nil {
		c.Cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	c.Cmd.Stderr = c.Out
	stdout, err := c.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		c.Cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("serve output:\n%s", c.Logs())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		if sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
		c.Cmd.Wait()
		close(exited)
	}()
	select {
	case line := <-lines:
		var r serveReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("serve mode printed %q: %v\n%s", line, err, c.Logs())
		}
		return c, r
	case <-exited:
		t.Fatalf("serve mode exited:\n%s", c.Logs())
	case <-time.After(180 * time.Second):
		t.Fatalf("serve mode did not start its silos in time:\n%s", c.Logs())
	}
	return nil, serveReport{}
}

// serveMain is the test binary's serve mode.
func serveMain(cfgPath string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		log.Error("config", "err", err)
		return 1
	}
	m, err := spawner.New(cfg, spawner.Options{Logger: log})
	if err != nil {
		log.Error("spawner", "err", err)
		return 1
	}
	var names []string
	for _, s := range cfg.Silos {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		err := m.Start(ctx, n)
		cancel()
		if err != nil {
			log.Error("start", "silo", n, "err", err)
			return 1
		}
	}
	b, _ := json.Marshal(serveReport{Pid: os.Getpid(), Statuses: m.Statuses()})
	fmt.Println(string(b))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx, spawner.StopFast); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}
