package spawner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/silo-proxy/silo-proxy/config"
)

// fakeProc is a silo process whose exit the test controls.
type fakeProc struct {
	id     int
	doneCh chan struct{}

	mu      sync.Mutex
	err     error
	exited  bool
	signals []StopMode
	killed  bool
	// exitOn lists the modes that make the fake postmaster exit; nil
	// means every mode.
	exitOn []StopMode
	dbs    [][]string
}

func (p *fakeProc) pid() int              { return p.id }
func (p *fakeProc) done() <-chan struct{} { return p.doneCh }
func (p *fakeProc) usage() (Usage, bool)  { return Usage{Pids: 3}, true }

func (p *fakeProc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *fakeProc) exit(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	p.exited = true
	p.err = err
	close(p.doneCh)
}

func (p *fakeProc) shutdown(mode StopMode) error {
	p.mu.Lock()
	p.signals = append(p.signals, mode)
	exit := p.exitOn == nil || slices.Contains(p.exitOn, mode)
	p.mu.Unlock()
	if exit {
		go p.exit(nil)
	}
	return nil
}

func (p *fakeProc) kill() {
	p.mu.Lock()
	p.killed = true
	p.mu.Unlock()
	go p.exit(errors.New("killed"))
}

func (p *fakeProc) ensureDatabases(ctx context.Context, dbs []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dbs = append(p.dbs, dbs)
	return nil
}

func (p *fakeProc) gotSignals() []StopMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.signals)
}

// fakeLauncher starts fakeProcs. Hooks decide, per launch, whether it
// fails or blocks.
type fakeLauncher struct {
	mu       sync.Mutex
	n        int
	launches map[string]int
	procs    map[string][]*fakeProc
	reqs     []launchRequest
	// fail, when it returns an error for a request, fails that launch.
	fail func(req launchRequest) error
	// gate, when set, is waited for before a launch succeeds (or ctx ends).
	gate chan struct{}
	// exitOn is copied into every new proc.
	exitOn []StopMode
	closed bool
	// parks and unparks count the wanted park and the unpark calls.
	parks, unparks map[string]int
}

func newFakeLauncher() *fakeLauncher {
	return &fakeLauncher{launches: map[string]int{}, procs: map[string][]*fakeProc{},
		parks: map[string]int{}, unparks: map[string]int{}}
}

func (l *fakeLauncher) park(ctx context.Context, req launchRequest, wanted func() bool) {
	if !wanted() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.parks[req.Silo.Name]++
}

func (l *fakeLauncher) unpark(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unparks[name]++
}

func (l *fakeLauncher) parked(silo string) (parks, unparks int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.parks[silo], l.unparks[silo]
}

func (l *fakeLauncher) launch(ctx context.Context, req launchRequest) (siloProc, error) {
	l.mu.Lock()
	l.launches[req.Silo.Name]++
	l.reqs = append(l.reqs, req)
	fail, gate := l.fail, l.gate
	l.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		if err := fail(req); err != nil {
			return nil, err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	p := &fakeProc{id: 1000 + l.n, doneCh: make(chan struct{}), exitOn: l.exitOn}
	l.procs[req.Silo.Name] = append(l.procs[req.Silo.Name], p)
	return p, nil
}

func (l *fakeLauncher) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

func (l *fakeLauncher) count(silo string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.launches[silo]
}

func (l *fakeLauncher) last(silo string) *fakeProc {
	l.mu.Lock()
	defer l.mu.Unlock()
	ps := l.procs[silo]
	if len(ps) == 0 {
		return nil
	}
	return ps[len(ps)-1]
}

// events records Observer calls as strings.
type events struct {
	mu  sync.Mutex
	all []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, s)
}

func (e *events) StateChanged(silo string, from, to State) {
	e.add(fmt.Sprintf("%s:%s->%s", silo, from, to))
}

func (e *events) SiloStarted(silo string, reason StartReason, took time.Duration) {
	e.add(fmt.Sprintf("%s:started(%s)", silo, reason))
}

func (e *events) SiloExited(silo string, clean bool) {
	e.add(fmt.Sprintf("%s:exited(clean=%v)", silo, clean))
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.all)
}

func (e *events) has(s string) bool { return slices.Contains(e.list(), s) }

func testSilo(name string, mut ...func(*config.Silo)) config.Silo {
	s := config.Silo{Name: name, Databases: []string{name}, Settings: config.BuiltinSettings()}
	s.StartTimeout = 10 * time.Second
	for _, m := range mut {
		m(&s)
	}
	return s
}

func testConfig(t *testing.T, silos ...config.Silo) *config.Config {
	return &config.Config{StateDir: t.TempDir(), BaseRootDir: "/run/silo-test-roots", Postgres: config.Postgres{BinDir: "auto"}, Silos: silos}
}

func newTestManager(t *testing.T, cfg *config.Config, l *fakeLauncher) (*Manager, *events) {
	t.Helper()
	ev := &events{}
	m, err := New(cfg, Options{Observer: ev, launcher: l, StopGrace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		m.Shutdown(ctx, StopImmediate)
	})
	return m, ev
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stateOf(m *Manager, name string) State {
	for _, s := range m.Statuses() {
		if s.Name == name {
			return s.State
		}
	}
	return "absent"
}

func acquire(t *testing.T, m *Manager, name string) *Lease {
	t.Helper()
	l, err := m.Acquire(context.Background(), name)
	if err != nil {
		t.Fatalf("Acquire(%s): %v", name, err)
	}
	return l
}

func TestAcquireColdStartsAndCountsLeases(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	cfg := testConfig(t, testSilo("sales"))
	m, ev := newTestManager(t, cfg, l)
	if got := stateOf(m, "sales"); got != StateStopped {
		t.Fatalf("initial state %s, want stopped", got)
	}
	first := acquire(t, m, "sales")
	if !first.ColdStart {
		t.Error("first lease of a stopped silo is not a cold start")
	}
	if want := cfg.Paths("sales").Run + "/.s.PGSQL.5432"; first.SocketPath != want {
		t.Errorf("SocketPath = %q, want %q", first.SocketPath, want)
	}
	second := acquire(t, m, "sales")
	if second.ColdStart {
		t.Error("lease of a running silo is marked cold")
	}
	st := m.Statuses()[0]
	if st.State != StateRunning || st.Clients != 2 || st.Pid == 0 || st.StartedAt.IsZero() {
		t.Errorf("status after two leases = %+v", st)
	}
	first.Release()
	first.Release() // idempotent
	if c := m.Statuses()[0].Clients; c != 1 {
		t.Errorf("clients after one release (twice) = %d, want 1", c)
	}
	second.Release()
	if c := m.Statuses()[0].Clients; c != 0 {
		t.Errorf("clients after both releases = %d, want 0", c)
	}
	if l.count("sales") != 1 {
		t.Errorf("launches = %d, want 1", l.count("sales"))
	}
	want := []string{"sales:stopped->starting", "sales:starting->running", "sales:started(cold)"}
	if got := ev.list(); !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
	if u, ok := m.Usage("sales"); !ok || u.Pids != 3 {
		t.Errorf("Usage = %+v, %v", u, ok)
	}
}

func TestAcquireErrors(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	m, _ := newTestManager(t, testConfig(t, testSilo("small", func(s *config.Silo) { s.MaxClients = 2 })), l)
	if _, err := m.Acquire(context.Background(), "nope"); !errors.Is(err, ErrUnknownSilo) {
		t.Errorf("Acquire(unknown) = %v, want ErrUnknownSilo", err)
	}
	a, b := acquire(t, m, "small"), acquire(t, m, "small")
	if _, err := m.Acquire(context.Background(), "small"); !errors.Is(err, ErrTooManyClients) {
		t.Errorf("third Acquire = %v, want ErrTooManyClients", err)
	}
	a.Release()
	c := acquire(t, m, "small")
	b.Release()
	c.Release()
}

func TestMaxClientsIsAtomic(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	m, _ := newTestManager(t, testConfig(t, testSilo("s", func(s *config.Silo) { s.MaxClients = 5 })), l)
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted, refused := 0, 0
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Acquire(context.Background(), "s")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				granted++
			case errors.Is(err, ErrTooManyClients):
				refused++
			default:
				t.Errorf("Acquire: %v", err)
			}
		}()
	}
	wg.Wait()
	if granted != 5 || refused != 35 {
		t.Errorf("granted %d, refused %d; want 5 and 35", granted, refused)
	}
	if l.count("s") != 1 {
		t.Errorf("40 concurrent cold Acquires launched %d times, want 1", l.count("s"))
	}
}

func TestAcquireTimesOutWhileStarting(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	l.gate = make(chan struct{})
	m, _ := newTestManager(t, testConfig(t, testSilo("slow", func(s *config.Silo) { s.StartTimeout = 30 * time.Millisecond })), l)
	_, err := m.Acquire(context.Background(), "slow")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Acquire of a silo that never gets ready = %v, want ErrUnavailable", err)
	}
	if got := stateOf(m, "slow"); got != StateStarting {
		t.Errorf("state = %s, want starting (the start goes on)", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Acquire(ctx, "slow"); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context = %v", err)
	}
	close(l.gate)
	waitFor(t, "running", func() bool { return stateOf(m, "slow") == StateRunning })
	acquire(t, m, "slow").Release()
}

func TestFailedStartIsReportedAndBackedOff(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	l.fail = func(req launchRequest) error {
		return &InitError{Step: "bind", Source: "/srv/x", Target: "/import", Message: "no such file or directory"}
	}
	m, ev := newTestManager(t, testConfig(t, testSilo("bad")), l)
	_, err := m.Acquire(context.Background(), "bad")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "bind /srv/x -> /import: no such file or directory") {
		t.Fatalf("Acquire = %v, want ErrUnavailable naming the mount", err)
	}
	st := m.Statuses()[0]
	if st.State != StateFailed || !strings.Contains(st.LastError, "/import") {
		t.Errorf("status = %+v", st)
	}
	// Within the backoff window no new attempt is made.
	if _, err := m.Acquire(context.Background(), "bad"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("second Acquire = %v", err)
	}
	if n := l.count("bad"); n != 1 {
		t.Errorf("launches = %d, want 1 (backoff)", n)
	}
	if !ev.has("bad:starting->failed") {
		t.Errorf("events %q lack starting->failed", ev.list())
	}
	// A manual start ignores the backoff, and works once the cause is gone.
	l.mu.Lock()
	l.fail = nil
	l.mu.Unlock()
	if err := m.Start(context.Background(), "bad"); err != nil {
		t.Fatalf("Start after the fix: %v", err)
	}
	if st := m.Statuses()[0]; st.State != StateRunning || st.LastError != "" {
		t.Errorf("status after a good start = %+v", st)
	}
}

func TestCrashIsRestartedWithBackoff(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	m, ev := newTestManager(t, testConfig(t, testSilo("db")), l)
	lease := acquire(t, m, "db")
	p := l.last("db")
	p.exit(errors.New("postmaster killed by signal killed"))
	waitFor(t, "failed after the crash", func() bool { return stateOf(m, "db") == StateFailed })
	if !ev.has("db:exited(clean=false)") {
		t.Errorf("events %q lack the unclean exit", ev.list())
	}
	// A client arriving during the backoff waits for the restart.
	begin := time.Now()
	again := acquire(t, m, "db")
	if !again.ColdStart {
		t.Error("lease that waited for a restart is not marked cold")
	}
	t.Logf("client waited %s for the restart", time.Since(begin))
	st := m.Statuses()[0]
	if st.Restarts != 1 || st.State != StateRunning {
		t.Errorf("status after restart = %+v", st)
	}
	if !ev.has("db:started(restart)") {
		t.Errorf("events %q lack the restart", ev.list())
	}
	if l.last("db") == p {
		t.Error("no new process after the crash")
	}
	lease.Release()
	again.Release()
}

func TestIdleTimeoutStopsAndNextAcquireColdStarts(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	m, ev := newTestManager(t, testConfig(t, testSilo("idle", func(s *config.Silo) { s.IdleTimeout = 20 * time.Millisecond })), l)
	acquire(t, m, "idle").Release()
	first := l.last("idle")
	waitFor(t, "idle stop", func() bool { return stateOf(m, "idle") == StateStopped })
	if got := first.gotSignals(); !slices.Equal(got, []StopMode{StopSmart}) {
		t.Errorf("idle stop sent %v, want [smart]", got)
	}
	if !ev.has("idle:exited(clean=true)") {
		t.Errorf("events %q lack a clean exit", ev.list())
	}
	lease := acquire(t, m, "idle")
	if !lease.ColdStart {
		t.Error("Acquire after an idle stop is not cold")
	}
	lease.Release()
}

func TestIdleTimerIgnoresSilosWithClients(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	m, _ := newTestManager(t, testConfig(t, testSilo("busy", func(s *config.Silo) { s.IdleTimeout = 10 * time.Millisecond })), l)
	lease := acquire(t, m, "busy")
	time.Sleep(100 * time.Millisecond)
	if got := stateOf(m, "busy"); got != StateRunning {
		t.Fatalf("silo with a client is %s, want running", got)
	}
	lease.Release()
	waitFor(t, "idle stop", func() bool { return stateOf(m, "busy") == StateStopped })
}

func TestReconfigureDrainsRemovedSilo(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	cfg := testConfig(t, testSilo("keep"), testSilo("gone"))
	m, ev := newTestManager(t, cfg, l)
	lease := acquire(t, m, "gone")
	next := *cfg
	next.Silos = []config.Silo{testSilo("keep"), testSilo("new")}
	if err := m.Reconfigure(&next); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(m, "gone"); got != StateDraining {
		t.Fatalf("removed silo with a client is %s, want draining", got)
	}
	if _, err := m.Acquire(context.Background(), "gone"); !errors.Is(err, ErrDraining) {
		t.Errorf("Acquire on a draining silo = %v, want ErrDraining", err)
	}
	if got := stateOf(m, "new"); got != StateStopped {
		t.Errorf("added silo is %s, want stopped (available)", got)
	}
	acquire(t, m, "new").Release()
	names := func() []string {
		var n []string
		for _, s := range m.Statuses() {
			n = append(n, s.Name)
		}
		return n
	}
	if got := names(); !slices.Equal(got, []string{"keep", "new", "gone"}) {
		t.Errorf("Statuses order %q, want config order then draining", got)
	}
	lease.Release()
	waitFor(t, "removed silo gone", func() bool { return stateOf(m, "gone") == "absent" })
	if got := l.last("gone").gotSignals(); !slices.Equal(got, []StopMode{StopSmart}) {
		t.Errorf("drained silo got %v, want [smart]", got)
	}
	if !ev.has("gone:running->draining") || !ev.has("gone:draining->stopping") {
		t.Errorf("events %q", ev.list())
	}
	if _, err := m.Acquire(context.Background(), "gone"); !errors.Is(err, ErrUnknownSilo) {
		t.Errorf("Acquire after removal = %v, want ErrUnknownSilo", err)
	}
}

func TestReconfigureRestartsChangedSiloWhenIdle(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	cfg := testConfig(t, testSilo("app"), testSilo("other"))
	m, ev := newTestManager(t, cfg, l)
	lease := acquire(t, m, "app")
	otherLease := acquire(t, m, "other")
	next := *cfg
	changed := testSilo("app", func(s *config.Silo) {
		s.Layout = config.LayoutStandard
		s.Databases = []string{"app", "app_reports"}
	})
	next.Silos = []config.Silo{changed, testSilo("other")}
	if err := m.Reconfigure(&next); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if n := l.count("app"); n != 1 {
		t.Fatalf("app restarted while it had a client (%d launches)", n)
	}
	// The new database is created at once on the running silo.
	waitFor(t, "new database ensured", func() bool {
		p := l.last("app")
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.dbs) == 1 && slices.Equal(p.dbs[0], []string{"app", "app_reports"})
	})
	lease.Release()
	waitFor(t, "reload restart", func() bool { return l.count("app") == 2 && stateOf(m, "app") == StateRunning })
	if !ev.has("app:started(reload)") {
		t.Errorf("events %q lack a reload start", ev.list())
	}
	l.mu.Lock()
	lastReq := l.reqs[len(l.reqs)-1]
	l.mu.Unlock()
	if lastReq.Silo.Layout != config.LayoutStandard {
		t.Errorf("restarted with layout %q, want the new config's", lastReq.Silo.Layout)
	}
	if l.count("other") != 1 || stateOf(m, "other") != StateRunning {
		t.Error("the unchanged silo was touched")
	}
	otherLease.Release()
}

// TestReconfigureKeepsRestartOnlySettings: a reload that changes
// state_dir, base_root_dir or postgres.bindir applies everything else and
// keeps those three at their running values, with a warning; running
// silos are not restarted for them.
func TestReconfigureKeepsRestartOnlySettings(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	cfg := testConfig(t, testSilo("app"))
	var logs logBuf
	m, err := New(cfg, Options{launcher: l, StopGrace: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown(context.Background(), StopImmediate) })
	lease := acquire(t, m, "app")

	next := *cfg
	next.StateDir = t.TempDir()
	next.BaseRootDir = "/run/elsewhere"
	next.Postgres.BinDir = "/usr/lib/postgresql/99/bin"
	next.Silos = []config.Silo{testSilo("app"), testSilo("added")}
	if err := m.Reconfigure(&next); err != nil {
		t.Fatalf("Reconfigure: %v", err)
	}
	if next.StateDir == cfg.StateDir {
		t.Fatal("Reconfigure modified the caller's config")
	}
	for _, key := range []string{"state_dir", "base_root_dir", "postgres.bindir", "after a restart"} {
		if !strings.Contains(logs.String(), key) {
			t.Errorf("the reload warning does not mention %q:\n%s", key, logs.String())
		}
	}
	// The added silo runs, on the running state_dir and installation.
	added := acquire(t, m, "added")
	if want := cfg.Paths("added").Run + "/.s.PGSQL.5432"; added.SocketPath != want {
		t.Errorf("added silo's socket %s, want %s (the running state_dir)", added.SocketPath, want)
	}
	l.mu.Lock()
	req := l.reqs[len(l.reqs)-1]
	l.mu.Unlock()
	if req.Silo.Name != "added" || req.Config.StateDir != cfg.StateDir ||
		req.Config.BaseRootDir != cfg.BaseRootDir || req.Config.Postgres.BinDir != cfg.Postgres.BinDir {
		t.Errorf("launch of %s with state_dir %s, base_root_dir %s, bindir %s; want the running %s, %s, %s",
			req.Silo.Name, req.Config.StateDir, req.Config.BaseRootDir, req.Config.Postgres.BinDir,
			cfg.StateDir, cfg.BaseRootDir, cfg.Postgres.BinDir)
	}
	// The running silo is not restarted for settings it does not get.
	lease.Release()
	added.Release()
	time.Sleep(20 * time.Millisecond)
	if n := l.count("app"); n != 1 || stateOf(m, "app") != StateRunning {
		t.Errorf("app: %d launches, state %s; want 1, running", n, stateOf(m, "app"))
	}

	// A mount the new file's validation allowed (its own state_dir is
	// elsewhere) but that lies inside the running state_dir is refused.
	leak := next
	leak.Silos = []config.Silo{testSilo("app", func(s *config.Silo) {
		s.Mounts = []config.Mount{{Source: filepath.Join(cfg.StateDir, "silos"), Target: "/peek", Mode: config.MountRO, Origin: "config.yaml:9"}}
	}), testSilo("added")}
	err = m.Reconfigure(&leak)
	var mis *MountInStateDirError
	if !errors.As(err, &mis) || mis.Silo != "app" {
		t.Errorf("Reconfigure with a mount inside the running state_dir = %v, want a MountInStateDirError for app", err)
	}
	if got := m.Statuses(); len(got) != 2 {
		t.Errorf("the refused reload changed the silos: %+v", got)
	}
}

func TestCheckMountsOutside(t *testing.T) {
	t.Parallel()
	const sd = "/var/lib/silo-proxy"
	for _, tc := range []struct {
		src string
		bad bool
	}{
		{"/var/lib/silo-proxy", true},
		{"/var/lib/silo-proxy/", true},
		{"/var/lib/silo-proxy/silos/b/data", true},
		{"/var/lib", true},
		{"/", true},
		{"/var/lib/silo-proxy-import", false},
		{"/srv/import", false},
		{"/var/lib/silo", false},
	} {
		silos := []config.Silo{testSilo("s", func(s *config.Silo) {
			s.Mounts = []config.Mount{{Source: tc.src, Target: "/x", Mode: config.MountRO}}
		})}
		err := checkMountsOutside(sd, silos)
		if (err != nil) != tc.bad {
			t.Errorf("mount of %s: %v, want refused=%v", tc.src, err, tc.bad)
		}
	}
}

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestStopModesAndEscalation(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	m, ev := newTestManager(t, testConfig(t, testSilo("a"), testSilo("b")), l)
	acquire(t, m, "a").Release()
	if err := m.Stop(context.Background(), "a", StopFast); err != nil {
		t.Fatal(err)
	}
	if got := l.last("a").gotSignals(); !slices.Equal(got, []StopMode{StopFast}) {
		t.Errorf("Stop(fast) sent %v", got)
	}
	want := []string{"a:stopped->starting", "a:starting->running", "a:started(cold)", "a:running->stopping", "a:exited(clean=true)", "a:stopping->stopped"}
	if got := ev.list(); !slices.Equal(got, want) {
		t.Errorf("events = %q\nwant     %q", got, want)
	}
	// b's postmaster ignores smart and fast shutdown (a session that never
	// ends): past the context the stop goes immediate.
	l.mu.Lock()
	l.exitOn = []StopMode{StopImmediate}
	l.mu.Unlock()
	acquire(t, m, "b").Release()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := m.Stop(ctx, "b", StopSmart)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop past its context = %v, want DeadlineExceeded", err)
	}
	if got := stateOf(m, "b"); got != StateStopped {
		t.Errorf("b is %s after Stop, want stopped", got)
	}
	if got := l.last("b").gotSignals(); !slices.Equal(got, []StopMode{StopSmart, StopImmediate}) {
		t.Errorf("signals %v, want [smart immediate]", got)
	}
	if err := m.Stop(context.Background(), "nope", StopFast); !errors.Is(err, ErrUnknownSilo) {
		t.Errorf("Stop(unknown) = %v", err)
	}
}

func TestStopDuringStartCancelsIt(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	l.gate = make(chan struct{}) // never opened: the launch only ends by cancellation
	m, _ := newTestManager(t, testConfig(t, testSilo("s")), l)
	acquired := make(chan error, 1)
	go func() {
		lease, err := m.Acquire(context.Background(), "s")
		if lease != nil {
			lease.Release()
		}
		acquired <- err
	}()
	waitFor(t, "starting", func() bool { return stateOf(m, "s") == StateStarting })
	if err := m.Stop(context.Background(), "s", StopFast); err != nil {
		t.Fatalf("Stop during start: %v", err)
	}
	// The client that was waiting for the start gets an error; it does
	// not start the silo again behind the operator's back.
	if err := <-acquired; !errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire waiting for the cancelled start = %v, want ErrUnavailable", err)
	}
	if got := stateOf(m, "s"); got != StateStopped {
		t.Errorf("state %s, want stopped", got)
	}
	if n := l.count("s"); n != 1 {
		t.Errorf("%d launches, want 1: the stopped silo was started again", n)
	}
}

// TestStopWaitsForItsOwnStop: a stop is over once the silo has stopped,
// even if a new client starts it again before the stopping caller looks.
// Waiting for the state to read stopped would then wait for ever.
func TestStopWaitsForItsOwnStop(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	l.gate = make(chan struct{}) // launches end only by cancellation
	m, _ := newTestManager(t, testConfig(t, testSilo("s")), l)
	acquireInBackground := func() chan error {
		ch := make(chan error, 1)
		go func() {
			lease, err := m.Acquire(context.Background(), "s")
			if lease != nil {
				lease.Release()
			}
			ch <- err
		}()
		return ch
	}
	first := acquireInBackground()
	waitFor(t, "first start", func() bool { return stateOf(m, "s") == StateStarting })
	m.mu.Lock()
	req := m.requestStopLocked(m.silos["s"], StopFast)
	m.unlock()
	if err := <-first; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Acquire during the stopped start = %v, want ErrUnavailable", err)
	}
	waitFor(t, "stopped", func() bool { return stateOf(m, "s") == StateStopped })
	acquireInBackground() // a new client: a second start, never finishing
	waitFor(t, "second start", func() bool { return stateOf(m, "s") == StateStarting && l.count("s") == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.waitStopped(ctx, []stopRequest{req}); err != nil {
		t.Fatalf("waiting for a stop that happened: %v", err)
	}
	if got := stateOf(m, "s"); got != StateStarting {
		t.Errorf("state %s: waiting for the old stop disturbed the new start", got)
	}
}

func TestRestartAndShutdown(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	m, ev := newTestManager(t, testConfig(t, testSilo("x"), testSilo("y")), l)
	acquire(t, m, "x").Release()
	if err := m.Restart(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	if l.count("x") != 2 || !ev.has("x:started(manual)") {
		t.Errorf("Restart: launches %d, events %q", l.count("x"), ev.list())
	}
	if got := l.procs["x"][0].gotSignals(); !slices.Equal(got, []StopMode{StopFast}) {
		t.Errorf("Restart stopped with %v, want [fast]", got)
	}
	if err := m.Restart(context.Background(), "y"); err != nil {
		t.Fatalf("Restart of a stopped silo: %v", err)
	}
	lease := acquire(t, m, "y")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Statuses() {
		if s.State != StateStopped {
			t.Errorf("after Shutdown %s is %s", s.Name, s.State)
		}
	}
	if _, err := m.Acquire(context.Background(), "x"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Acquire after Shutdown = %v, want ErrUnavailable", err)
	}
	if err := m.Start(context.Background(), "x"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Start after Shutdown = %v, want ErrUnavailable", err)
	}
	lease.Release()
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if !closed {
		t.Error("Shutdown did not close the launcher (state_dir lock)")
	}
}

// TestStoppedSilosAreParked: every stopped silo is parked at start, after
// a clean stop and after a reload; a crashed or removed one is not, and
// NoParking turns it off.
func TestStoppedSilosAreParked(t *testing.T) {
	t.Parallel()
	l := newFakeLauncher()
	cfg := testConfig(t, testSilo("a"), testSilo("b"))
	m, _ := newTestManager(t, cfg, l)
	waitFor(t, "both silos parked at start", func() bool {
		a, _ := l.parked("a")
		b, _ := l.parked("b")
		return a == 1 && b == 1
	})
	acquire(t, m, "a").Release()
	if err := m.Stop(context.Background(), "a", StopSmart); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a parked after its stop", func() bool { n, _ := l.parked("a"); return n == 2 })

	// A crash is restarted, not parked.
	acquire(t, m, "b").Release()
	l.last("b").exit(errors.New("killed by signal 9"))
	waitFor(t, "b restarted", func() bool { return l.count("b") == 2 && stateOf(m, "b") == StateRunning })
	if n, _ := l.parked("b"); n != 1 {
		t.Errorf("b parked %d times, want only the start's", n)
	}

	// A reload re-parks stopped silos (the launcher keeps a sandbox
	// whose configuration did not change) and parks added ones; a
	// removed stopped silo is unparked.
	next := *cfg
	next.Silos = []config.Silo{testSilo("b"), testSilo("c")}
	if err := m.Reconfigure(&next); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c parked, a unparked", func() bool {
		c, _ := l.parked("c")
		_, a := l.parked("a")
		return c == 1 && a == 1
	})
	if n, _ := l.parked("b"); n != 1 {
		t.Errorf("running b parked by the reload (%d parks)", n)
	}

	off := newFakeLauncher()
	m2, err := New(testConfig(t, testSilo("x")), Options{launcher: off, NoParking: true})
	if err != nil {
		t.Fatal(err)
	}
	acquire(t, m2, "x").Release()
	if err := m2.Shutdown(context.Background(), StopFast); err != nil {
		t.Fatal(err)
	}
	if n, _ := off.parked("x"); n != 0 {
		t.Errorf("NoParking: x parked %d times", n)
	}
}
