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
	"time"

	"github.com/silo-proxy/silo-proxy/config"
)

// Options configure a Manager.
type Options struct {
	// Logger receives the lifecycle log; every record carries silo=<name>.
	Logger *slog.Logger
	// Observer receives state changes, starts and exits (for metrics).
	Observer Observer
	// Executable is re-executed as silo-init. The default, /proc/self/exe,
	// is right for silo-proxy and for test binaries that dispatch InitArg
	// in an init function.
	Executable string
	// StopGrace is how long a stop the Manager decides on by itself
	// (idle_timeout, a drained or reloaded silo) waits in smart mode before
	// it escalates to fast, then immediate, then SIGKILL. Default 30s.
	StopGrace time.Duration

	// NoParking turns parking off: a stopped silo then has no process at
	// all, and each cold start builds its sandbox from scratch. By default
	// a stopped silo is parked: its silo-init is started ahead, with
	// namespaces, root, cgroup and privileges done, and waits for the
	// start (see docs/silos.md).
	NoParking bool

	// launcher replaces the host launcher in tests.
	launcher launcher
}

// Fixed steps of a stop that does not end in time.
const (
	immediateGrace    = 10 * time.Second // fast → immediate
	killAfter         = 5 * time.Second  // immediate → SIGKILL of silo-init
	defaultStopGrace  = 30 * time.Second
	defaultStartLimit = 30 * time.Second // start_timeout when the config has none
)

// Manager runs the silos of one config: it starts them on demand, counts
// the clients the proxy routes to them, supervises and restarts their
// postmasters, and stops them when idle, removed or asked to.
//
// Each silo moves through stopped → starting → running → stopping →
// stopped; failed when a start failed or the postmaster died (a crashed
// silo is restarted with backoff); draining when it was removed from the
// config while clients still use it.
type Manager struct {
	log       *slog.Logger
	obs       Observer
	launcher  launcher
	stopGrace time.Duration
	parking   bool
	// provision: silos get their generated superuser password as soon as
	// they are configured, not at their first start, so that an operator
	// can read it before the first client connects (host launcher only).
	provision bool
	// parkCtx ends the background parking at Shutdown.
	parkCtx    context.Context
	parkCancel context.CancelFunc

	mu     sync.Mutex
	cfg    *config.Config
	silos  map[string]*silo
	order  []string
	closed bool
	events []event

	// dispatchMu keeps Observer calls in the order the events happened;
	// it is taken before mu is released (see unlock).
	dispatchMu sync.Mutex
	wg         sync.WaitGroup
}

// silo is the Manager's record of one silo; every field is guarded by
// Manager.mu.
type silo struct {
	name    string
	conf    config.Silo
	log     *slog.Logger
	state   State
	changed chan struct{} // closed and replaced at every state change
	// stops counts the silo's arrivals in stopped. A caller waiting for
	// the stop it asked for waits for this to move, not for the state to
	// read stopped: a waiting client may start the silo again before the
	// caller gets the lock, and the state would never read stopped for it.
	stops int

	clients   int
	proc      siloProc
	startedAt time.Time
	restarts  int
	lastErr   error

	cancelStart context.CancelFunc // set while starting
	stopMode    StopMode           // mode of the stop in progress
	afterStop   *StartReason       // start again, for this reason, once stopped
	reload      bool               // sandbox changed: restart when no clients
	removed     bool               // no longer in the config

	// parkGen tells a background park whether it is still the latest
	// one asked for.
	parkGen int

	backoff      backoff
	retryAt      time.Time // no new start attempt by Acquire before this
	retryPending bool      // the supervisor will restart the silo
	retryGen     int
	idleGen      int
	idleTimer    *time.Timer
}

type eventKind int

const (
	evState eventKind = iota
	evStarted
	evExited
)

type event struct {
	kind     eventKind
	silo     string
	from, to State
	reason   StartReason
	took     time.Duration
	clean    bool
}

// New returns a Manager for cfg. No silo is started: the first Acquire (or
// Start) of a silo starts it. With the host launcher, New takes an
// exclusive lock on <state_dir>/lock, released by Shutdown.
func New(cfg *config.Config, opts Options) (*Manager, error) {
	if cfg == nil {
		return nil, errors.New("spawner: nil config")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		log:       log,
		obs:       opts.Observer,
		launcher:  opts.launcher,
		stopGrace: opts.StopGrace,
		parking:   !opts.NoParking,
		cfg:       cfg,
		silos:     map[string]*silo{},
	}
	m.parkCtx, m.parkCancel = context.WithCancel(context.Background())
	if m.stopGrace <= 0 {
		m.stopGrace = defaultStopGrace
	}
	if m.launcher == nil {
		exe := opts.Executable
		if exe == "" {
			exe = "/proc/self/exe"
		}
		l, err := newLauncher(cfg, exe, log)
		if err != nil {
			return nil, err
		}
		m.launcher = l
		m.provision = true
	}
	m.mu.Lock()
	for _, sc := range cfg.Silos {
		m.parkLocked(m.addLocked(sc))
	}
	m.mu.Unlock()
	return m, nil
}

// parkLocked has the launcher park the stopped silo s in the background
// (see hostLauncher.park), unless parking is off or s is not to start
// again. A later parkLocked, or any start, makes an earlier park moot.
func (m *Manager) parkLocked(s *silo) {
	if !m.parking || m.closed || s.removed || s.state != StateStopped {
		return
	}
	s.parkGen++
	gen := s.parkGen
	req := launchRequest{Config: m.cfg, Silo: s.conf, Log: s.log}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.launcher.park(m.parkCtx, req, func() bool {
			m.mu.Lock()
			defer m.mu.Unlock()
			return s.parkGen == gen && s.state == StateStopped && !s.removed && !m.closed
		})
	}()
}

// unparkLocked releases what was parked for s, in the background.
func (m *Manager) unparkLocked(s *silo) {
	if !m.parking {
		return
	}
	s.parkGen++
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.launcher.unpark(s.name)
	}()
}

func (m *Manager) addLocked(sc config.Silo) *silo {
	s := &silo{
		name:    sc.Name,
		conf:    sc,
		log:     m.log.With("silo", sc.Name),
		state:   StateStopped,
		changed: make(chan struct{}),
	}
	m.silos[sc.Name] = s
	m.order = append(m.order, sc.Name)
	if m.provision {
		if err := provisionPassword(m.cfg, sc); err != nil {
			s.log.Warn("cannot prepare the superuser password yet; the first start retries", "err", err)
		}
	}
	return s
}

// unlock releases mu and delivers the events recorded under it. The
// dispatch lock is taken before mu is released, so two goroutines can
// never deliver their events out of order. Observers must therefore not
// call back into the Manager.
func (m *Manager) unlock() {
	ev := m.events
	m.events = nil
	if len(ev) == 0 || m.obs == nil {
		m.mu.Unlock()
		return
	}
	m.dispatchMu.Lock()
	m.mu.Unlock()
	defer m.dispatchMu.Unlock()
	for _, e := range ev {
		switch e.kind {
		case evState:
			m.obs.StateChanged(e.silo, e.from, e.to)
		case evStarted:
			m.obs.SiloStarted(e.silo, e.reason, e.took)
		case evExited:
			m.obs.SiloExited(e.silo, e.clean)
		}
	}
}

// flushEvents returns once the Observer has received every event recorded
// before the caller last released mu: whoever recorded them took
// dispatchMu before releasing mu, and holds it until they are delivered.
// Calls that wait for a state, and Statuses, flush before they return, so
// that a caller reading metrics after Start, Stop, a cold Acquire or a
// status snapshot sees the changes they saw.
func (m *Manager) flushEvents() {
	m.dispatchMu.Lock()
	m.dispatchMu.Unlock()
}

func (m *Manager) setState(s *silo, to State) {
	if s.state == to {
		return
	}
	from := s.state
	s.state = to
	if to == StateStopped {
		s.stops++
	}
	close(s.changed)
	s.changed = make(chan struct{})
	m.events = append(m.events, event{kind: evState, silo: s.name, from: from, to: to})
	s.log.Debug("silo state", "from", string(from), "to", string(to))
}

func (m *Manager) lookup(name string) (*silo, error) {
	s := m.silos[name]
	if s == nil {
		return nil, fmt.Errorf("silo %q: %w", name, ErrUnknownSilo)
	}
	return s, nil
}

func startTimeout(sc config.Silo) time.Duration {
	if sc.StartTimeout > 0 {
		return sc.StartTimeout
	}
	return defaultStartLimit
}

// unavailable wraps ErrUnavailable and the silo's last error (an
// *InitError, say, which callers may inspect with errors.As).
func unavailable(s *silo, why string) error {
	if s.lastErr != nil {
		return fmt.Errorf("silo %s %s: %w: %w", s.name, why, ErrUnavailable, s.lastErr)
	}
	return fmt.Errorf("silo %s %s: %w", s.name, why, ErrUnavailable)
}

// Acquire returns a lease on a running silo, starting it first when it is
// stopped (Lease.ColdStart) and waiting up to the silo's start_timeout for
// a start or a supervisor restart in progress. max_clients is enforced
// here, atomically with the count.
func (m *Manager) Acquire(ctx context.Context, name string) (*Lease, error) {
	lease, waited, err := m.acquire(ctx, name)
	if waited {
		m.flushEvents()
	}
	return lease, err
}

// acquire is Acquire; waited says whether it saw the silo other than
// running, so that Acquire returns only after the Observer has seen the
// start (or failure) it waited for. A warm Acquire, the proxy's hot path,
// skips that.
func (m *Manager) acquire(ctx context.Context, name string) (*Lease, bool, error) {
	m.mu.Lock()
	s, err := m.lookup(name)
	if err != nil {
		m.mu.Unlock()
		return nil, false, err
	}
	deadline := time.Now().Add(startTimeout(s.conf))
	cold, attempted := false, false
	for {
		if m.closed {
			m.unlock()
			return nil, cold, fmt.Errorf("silo %s: %w: the proxy is shutting down", name, ErrUnavailable)
		}
		if s.removed {
			m.unlock()
			return nil, cold, fmt.Errorf("silo %s: %w", name, ErrDraining)
		}
		switch s.state {
		case StateRunning:
			if max := s.conf.MaxClients; max > 0 && s.clients >= max {
				m.unlock()
				return nil, cold, fmt.Errorf("silo %s has %d clients: %w", name, s.clients, ErrTooManyClients)
			}
			s.clients++
			m.stopIdleTimer(s)
			lease := &Lease{Silo: name, SocketPath: m.socketPath(name), ColdStart: cold}
			lease.release = func() { m.release(s) }
			m.unlock()
			return lease, cold, nil
		case StateDraining:
			m.unlock()
			return nil, cold, fmt.Errorf("silo %s: %w", name, ErrDraining)
		case StateStopped:
			if attempted {
				// The start this client waited for was cancelled by a
				// stop (POST /silos/…/stop, a reload removing the silo):
				// starting it again would override the operator.
				m.unlock()
				return nil, cold, fmt.Errorf("silo %s: %w: stopped while starting", name, ErrUnavailable)
			}
			m.startLocked(s, StartCold)
			cold, attempted = true, true
		case StateFailed:
			switch {
			case s.retryPending:
				// The supervisor restarts it; wait for that.
			case attempted:
				err := unavailable(s, "failed to start")
				m.unlock()
				return nil, cold, err
			case !time.Now().Before(s.retryAt):
				m.startLocked(s, StartCold)
				cold, attempted = true, true
			default:
				err := unavailable(s, fmt.Sprintf("failed; next start attempt in %s", time.Until(s.retryAt).Round(time.Millisecond)))
				m.unlock()
				return nil, cold, err
			}
		case StateStarting:
			// Someone else's start counts as this client's attempt: if it
			// fails or is stopped, the client gets the error.
			attempted = true
		case StateStopping:
			// wait
		}
		if s.state != StateRunning {
			cold = true
		}
		ch := s.changed
		m.unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			m.mu.Lock()
			err := unavailable(s, fmt.Sprintf("did not become ready within %s (state %s)", startTimeout(s.conf), s.state))
			m.unlock()
			return nil, cold, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ch:
			t.Stop()
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, cold, fmt.Errorf("silo %s: %w: %w", name, ErrUnavailable, ctx.Err())
		}
		m.mu.Lock()
	}
}

func (m *Manager) socketPath(name string) string {
	return filepath.Join(m.cfg.Paths(name).Run, socketName)
}

// release is a lease's Release.
func (m *Manager) release(s *silo) {
	m.mu.Lock()
	if s.clients > 0 {
		s.clients--
	}
	m.settleLocked(s)
	m.unlock()
}

// settleLocked decides what a running silo without clients does next:
// stop (removed), restart (its sandbox changed) or arm the idle timer.
func (m *Manager) settleLocked(s *silo) {
	if s.state != StateRunning && s.state != StateDraining {
		return
	}
	if s.clients > 0 || m.closed {
		return
	}
	switch {
	case s.removed:
		s.log.Info("stopping removed silo: its last client left")
		m.stopLocked(s, StopSmart, nil, true)
	case s.reload:
		s.reload = false
		s.log.Info("restarting silo for its new configuration")
		r := StartReload
		m.stopLocked(s, StopSmart, &r, true)
	case s.conf.IdleTimeout > 0:
		m.armIdleTimer(s)
	}
}

func (m *Manager) armIdleTimer(s *silo) {
	m.stopIdleTimer(s)
	s.idleGen++
	gen := s.idleGen
	s.idleTimer = time.AfterFunc(s.conf.IdleTimeout, func() {
		m.mu.Lock()
		if s.idleGen == gen && s.state == StateRunning && s.clients == 0 && !m.closed {
			s.idleTimer = nil
			s.log.Info("stopping idle silo", "idle_timeout", s.conf.IdleTimeout)
			m.stopLocked(s, StopSmart, nil, true)
		}
		m.unlock()
	})
}

func (m *Manager) stopIdleTimer(s *silo) {
	s.idleGen++
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
}

func (m *Manager) cancelRetry(s *silo) {
	s.retryGen++
	s.retryPending = false
}

// startLocked begins a start attempt; run carries it out.
func (m *Manager) startLocked(s *silo, reason StartReason) {
	m.stopIdleTimer(s)
	m.cancelRetry(s)
	s.parkGen++
	m.setState(s, StateStarting)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancelStart = cancel
	req := launchRequest{Config: m.cfg, Silo: s.conf, Log: s.log}
	s.log.Info("starting silo", "reason", string(reason))
	m.wg.Add(1)
	go m.run(ctx, s, reason, req)
}

// run launches the silo and, once it runs, waits for it to exit.
func (m *Manager) run(ctx context.Context, s *silo, reason StartReason, req launchRequest) {
	defer m.wg.Done()
	begin := time.Now()
	proc, err := m.launcher.launch(ctx, req)
	m.mu.Lock()
	if s.cancelStart != nil {
		s.cancelStart()
		s.cancelStart = nil
	}
	if err != nil {
		if s.state == StateStopping {
			s.log.Info("silo start cancelled", "err", err)
			m.stoppedLocked(s)
		} else {
			m.startFailedLocked(s, reason, err)
		}
		m.unlock()
		return
	}
	s.proc = proc
	s.startedAt = time.Now()
	took := s.startedAt.Sub(begin)
	if s.state == StateStopping {
		// Stopped while it was becoming ready: carry the stop out.
		proc.shutdown(s.stopMode)
		go m.escalate(s, proc, m.stopGrace)
	} else {
		s.lastErr = nil
		m.setState(s, StateRunning)
		m.events = append(m.events, event{kind: evStarted, silo: s.name, reason: reason, took: took})
		s.log.Info("silo running", "reason", string(reason), "took", took.Round(time.Millisecond), "pid", proc.pid())
		m.settleLocked(s)
	}
	m.unlock()

	<-proc.done()
	m.mu.Lock()
	m.exitedLocked(s, proc)
	m.unlock()
}

func (m *Manager) startFailedLocked(s *silo, reason StartReason, err error) {
	now := time.Now()
	delay := s.backoff.failed(time.Time{}, now)
	s.lastErr = err
	s.retryAt = now.Add(delay)
	s.startedAt = time.Time{}
	s.log.Error("silo failed to start", "err", err.Error(), "reason", string(reason))
	if s.removed || m.closed {
		m.stoppedLocked(s)
		return
	}
	m.setState(s, StateFailed)
	if reason == StartRestart {
		// A crash-looping silo keeps being restarted, with backoff.
		m.scheduleRestartLocked(s, delay)
	}
}

// exitedLocked handles the end of a silo that was running.
func (m *Manager) exitedLocked(s *silo, proc siloProc) {
	if s.proc != proc {
		panic("BUG: exit of a silo process the Manager does not hold")
	}
	s.proc = nil
	err := proc.exitErr()
	if s.state == StateStopping {
		m.events = append(m.events, event{kind: evExited, silo: s.name, clean: true})
		if err != nil {
			s.log.Info("silo stopped", "mode", s.stopMode.String(), "status", err.Error())
		} else {
			s.log.Info("silo stopped", "mode", s.stopMode.String())
		}
		m.stoppedLocked(s)
		return
	}
	m.events = append(m.events, event{kind: evExited, silo: s.name, clean: false})
	if err == nil {
		err = errors.New("postmaster exited unexpectedly")
	}
	now := time.Now()
	delay := s.backoff.failed(s.startedAt, now)
	s.lastErr = err
	s.startedAt = time.Time{}
	if s.removed || m.closed {
		s.log.Warn("silo exited", "err", err.Error())
		m.stoppedLocked(s)
		return
	}
	s.log.Error("silo exited unexpectedly; restarting", "err", err.Error(), "after", delay)
	s.retryAt = now.Add(delay)
	m.setState(s, StateFailed)
	m.scheduleRestartLocked(s, delay)
}

func (m *Manager) scheduleRestartLocked(s *silo, delay time.Duration) {
	s.retryGen++
	gen := s.retryGen
	s.retryPending = true
	time.AfterFunc(delay, func() {
		m.mu.Lock()
		if s.retryGen == gen && s.retryPending && s.state == StateFailed && !m.closed && !s.removed {
			s.restarts++
			m.startLocked(s, StartRestart)
		}
		m.unlock()
	})
}

// stoppedLocked records that the silo has no process any more.
func (m *Manager) stoppedLocked(s *silo) {
	m.stopIdleTimer(s)
	s.startedAt = time.Time{}
	after := s.afterStop
	s.afterStop = nil
	m.setState(s, StateStopped)
	if s.removed {
		delete(m.silos, s.name)
		m.order = slices.DeleteFunc(m.order, func(n string) bool { return n == s.name })
		m.unparkLocked(s)
		return
	}
	if after != nil && !m.closed {
		m.startLocked(s, *after)
		return
	}
	if s.lastErr == nil {
		// A clean stop: the next start will most likely work the same.
		m.parkLocked(s)
	}
}

// stopLocked begins stopping the silo in mode; after, when set, starts it
// again once it has stopped. ladder escalates a stop that does not finish
// within the stop grace: fast, then immediate, then SIGKILL.
func (m *Manager) stopLocked(s *silo, mode StopMode, after *StartReason, ladder bool) {
	m.stopIdleTimer(s)
	switch s.state {
	case StateStopped, StateFailed:
		m.cancelRetry(s)
		if s.state == StateFailed {
			m.setState(s, StateStopped)
		}
		if after != nil && !m.closed {
			m.startLocked(s, *after)
		} else if s.removed {
			m.stoppedLocked(s)
		}
		return
	case StateStarting:
		s.stopMode = mode
		s.afterStop = after
		m.setState(s, StateStopping)
		if s.cancelStart != nil {
			s.cancelStart()
		}
		return
	case StateStopping:
		if after != nil {
			s.afterStop = after
		}
		if mode > s.stopMode && s.proc != nil {
			s.stopMode = mode
			s.proc.shutdown(mode)
		}
		return
	}
	// running or draining
	s.stopMode = mode
	s.afterStop = after
	m.setState(s, StateStopping)
	proc := s.proc
	if err := proc.shutdown(mode); err != nil {
		s.log.Warn("signalling the postmaster", "err", err.Error())
	}
	if ladder {
		go m.escalate(s, proc, m.stopGrace)
	}
}

// escalate hardens a stop of proc that does not finish: fast after grace,
// immediate after a further immediateGrace, SIGKILL of silo-init after
// killAfter more.
func (m *Manager) escalate(s *silo, proc siloProc, grace time.Duration) {
	steps := []struct {
		after time.Duration
		mode  StopMode
		kill  bool
	}{{grace, StopFast, false}, {immediateGrace, StopImmediate, false}, {killAfter, 0, true}}
	for _, st := range steps {
		t := time.NewTimer(st.after)
		select {
		case <-proc.done():
			t.Stop()
			return
		case <-t.C:
		}
		m.mu.Lock()
		if s.proc != proc || s.state != StateStopping {
			m.unlock()
			return
		}
		switch {
		case st.kill:
			s.log.Warn("silo did not stop; killing it")
			proc.kill()
		case st.mode > s.stopMode:
			s.log.Warn("silo did not stop in time; escalating", "from", s.stopMode.String(), "to", st.mode.String())
			s.stopMode = st.mode
			proc.shutdown(st.mode)
		}
		m.unlock()
	}
}

// killLater kills proc when it has not exited after d.
func (m *Manager) killLater(s *silo, proc siloProc, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-proc.done():
	case <-t.C:
		s.log.Warn("silo did not stop; killing it")
		proc.kill()
	}
}

// waitState waits until pred holds for the silo (or it has been removed),
// or ctx is done.
func (m *Manager) waitState(ctx context.Context, s *silo, pred func(*silo) bool) error {
	m.mu.Lock()
	for {
		if pred(s) || m.silos[s.name] != s {
			m.unlock()
			m.flushEvents()
			return nil
		}
		ch := s.changed
		m.unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		m.mu.Lock()
	}
}

// Start starts a stopped or failed silo (a manual start also forgets the
// backoff of earlier failures) and waits until it runs or fails.
func (m *Manager) Start(ctx context.Context, name string) error {
	m.mu.Lock()
	s, err := m.lookup(name)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	if m.closed {
		m.unlock()
		return fmt.Errorf("silo %s: %w: the proxy is shutting down", name, ErrUnavailable)
	}
	switch s.state {
	case StateStopped, StateFailed:
		s.backoff = backoff{}
		m.startLocked(s, StartManual)
	case StateStopping:
		r := StartManual
		s.afterStop = &r
	}
	m.unlock()
	return m.waitStarted(ctx, s)
}

// waitStarted waits for a start in progress (including one after a stop)
// to end, and returns its error.
func (m *Manager) waitStarted(ctx context.Context, s *silo) error {
	err := m.waitState(ctx, s, func(s *silo) bool {
		switch s.state {
		case StateRunning, StateDraining, StateFailed:
			return true
		case StateStopped:
			return s.afterStop == nil
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("silo %s: %w", s.name, err)
	}
	m.mu.Lock()
	defer m.unlock()
	switch s.state {
	case StateRunning, StateDraining:
		return nil
	case StateFailed:
		return unavailable(s, "failed to start")
	}
	return fmt.Errorf("silo %s is %s", s.name, s.state)
}

// Restart stops the silo (fast: sessions are terminated) and starts it
// again at once, with reason manual.
func (m *Manager) Restart(ctx context.Context, name string) error {
	m.mu.Lock()
	s, err := m.lookup(name)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	if m.closed {
		m.unlock()
		return fmt.Errorf("silo %s: %w: the proxy is shutting down", name, ErrUnavailable)
	}
	r := StartManual
	s.reload = false
	if s.state == StateFailed || s.state == StateStopped {
		s.backoff = backoff{}
	}
	m.stopLocked(s, StopFast, &r, false)
	m.unlock()
	return m.waitStarted(ctx, s)
}

// Stop shuts the silo's postmaster down in mode and waits until it has
// exited. When ctx ends first, the stop is escalated to immediate and then
// SIGKILL, and ctx's error is returned once the silo is gone. The next
// Acquire starts the silo again.
func (m *Manager) Stop(ctx context.Context, name string, mode StopMode) error {
	m.mu.Lock()
	s, err := m.lookup(name)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	s.reload = false
	s.afterStop = nil
	req := m.requestStopLocked(s, mode)
	m.unlock()
	return m.waitStopped(ctx, []stopRequest{req})
}

// stopRequest is a stop some caller waits for: it is over once the silo
// has arrived in stopped more often than the stops recorded when the stop
// was asked for (or at once, for a silo that was already stopped).
type stopRequest struct {
	s     *silo
	stops int
}

func (r stopRequest) done() bool {
	return r.s.stops != r.stops
}

// requestStopLocked begins stopping s in mode, without a start afterwards,
// and returns what to wait for.
func (m *Manager) requestStopLocked(s *silo, mode StopMode) stopRequest {
	req := stopRequest{s: s, stops: s.stops}
	if s.state == StateStopped && s.afterStop == nil {
		req.stops-- // nothing to wait for
	}
	m.stopLocked(s, mode, nil, false)
	return req
}

// waitStopped waits for the requested stops; past ctx it escalates them to
// immediate, then SIGKILL. A silo that a client starts again after its
// stop does not hold the wait up: the stop asked for happened.
func (m *Manager) waitStopped(ctx context.Context, reqs []stopRequest) error {
	var ctxErr error
	for _, r := range reqs {
		if err := m.waitState(ctx, r.s, func(*silo) bool { return r.done() }); err != nil {
			ctxErr = err
			break
		}
	}
	if ctxErr == nil {
		return nil
	}
	// Out of time: immediate shutdown, then SIGKILL.
	m.mu.Lock()
	for _, r := range reqs {
		s := r.s
		if m.silos[s.name] == s && !r.done() {
			m.stopLocked(s, StopImmediate, nil, false)
			if s.proc != nil {
				go m.killLater(s, s.proc, killAfter)
			}
		}
	}
	m.unlock()
	hard, cancel := context.WithTimeout(context.Background(), immediateGrace+killAfter+killGrace)
	defer cancel()
	for _, r := range reqs {
		if err := m.waitState(hard, r.s, func(*silo) bool { return r.done() }); err != nil {
			return fmt.Errorf("silo %s did not stop even after SIGKILL: %w", r.s.name, err)
		}
	}
	return fmt.Errorf("stopping %d silo(s) took too long, stopped immediately: %w", len(reqs), ctxErr)
}

// Statuses returns a snapshot of every silo, in config order, then the
// removed silos that are still draining.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	defer m.flushEvents() // the Observer has seen every change the snapshot shows
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.order))
	for _, n := range m.order {
		s := m.silos[n]
		st := Status{
			Name:      s.name,
			Databases: slices.Clone(s.conf.Databases),
			State:     s.state,
			Clients:   s.clients,
			Restarts:  s.restarts,
		}
		if s.proc != nil {
			st.Pid = s.proc.pid()
			st.StartedAt = s.startedAt
		}
		if s.lastErr != nil {
			st.LastError = s.lastErr.Error()
		}
		out = append(out, st)
	}
	return out
}

// Usage returns the silo's cgroup accounting; false when the silo is not
// running or has no cgroup.
func (m *Manager) Usage(name string) (Usage, bool) {
	m.mu.Lock()
	s := m.silos[name]
	var p siloProc
	if s != nil {
		p = s.proc
	}
	m.mu.Unlock()
	if p == nil {
		return Usage{}, false
	}
	return p.usage()
}

// Reconfigure applies a new, validated config. Added silos are available
// at once. Removed silos take no new clients; those with clients drain and
// stop (smart) when their last lease is released. A silo whose sandbox
// changed (config.Silo.SandboxChanged) restarts, with reason reload, when
// it next has no clients. New databases of a running silo are created at
// once.
//
// state_dir, base_root_dir and postgres.bindir keep their running values
// (see pinRestartOnly); a change of them is logged and applies after a
// restart of the proxy. The reload is refused when a silo would then bind
// a source inside the running state_dir, which the new file's validation,
// made against its own state_dir, could not catch.
func (m *Manager) Reconfigure(cfg *config.Config) error {
	if cfg == nil {
		return errors.New("spawner: nil config")
	}
	m.mu.Lock()
	defer m.unlock()
	if m.closed {
		return errors.New("spawner: the manager is shut down")
	}
	old := m.cfg
	cfg, changed := pinRestartOnly(old, cfg)
	if err := checkMountsOutside(cfg.StateDir, cfg.Silos); err != nil {
		return err
	}
	if len(changed) > 0 {
		m.log.Warn("settings changed that apply only after a restart of silo-proxy; the running values stay",
			changed...)
	}
	m.cfg = cfg
	keep := map[string]bool{}
	var order []string
	for _, sc := range cfg.Silos {
		keep[sc.Name] = true
		order = append(order, sc.Name)
		s := m.silos[sc.Name]
		if s == nil {
			s = m.addLocked(sc)
			s.log.Info("silo added")
			m.parkLocked(s)
			continue
		}
		prev := s.conf
		s.conf = sc
		if s.removed {
			s.removed = false
			s.log.Info("silo added back")
			if s.state == StateDraining {
				m.setState(s, StateRunning)
			}
		}
		// A parked sandbox built from the old configuration is replaced
		// (the launcher keeps it if nothing it depends on changed).
		m.parkLocked(s)
		if prev.SandboxChanged(&sc) {
			switch s.state {
			case StateRunning, StateDraining, StateStarting:
				s.reload = true
				s.log.Info("silo configuration changed; it restarts when it has no clients")
			case StateStopping:
				if s.afterStop != nil {
					r := StartReload
					s.afterStop = &r
				}
			}
		}
		if s.state == StateRunning && !slices.Equal(prev.Databases, sc.Databases) {
			m.ensureInBackground(s, s.proc, listedDatabases(sc.Databases))
		}
		if s.state == StateRunning && prev.IdleTimeout != sc.IdleTimeout {
			m.stopIdleTimer(s)
		}
		m.settleLocked(s)
	}
	for _, n := range m.order {
		if keep[n] {
			continue
		}
		s := m.silos[n]
		if s == nil || s.removed {
			continue
		}
		s.removed = true
		s.log.Info("silo removed from the config")
		switch s.state {
		case StateRunning:
			if s.clients > 0 {
				m.setState(s, StateDraining)
			} else {
				m.stopLocked(s, StopSmart, nil, true)
			}
		case StateStarting:
			m.stopLocked(s, StopSmart, nil, true)
		case StateStopping:
			s.afterStop = nil
		case StateStopped, StateFailed:
			m.cancelRetry(s)
			m.stoppedLocked(s)
		}
	}
	// Config order first, then silos still draining or stopping.
	for _, n := range m.order {
		if !keep[n] && m.silos[n] != nil {
			order = append(order, n)
		}
	}
	m.order = order
	return nil
}

// pinRestartOnly returns next with the settings a running proxy cannot
// change taken from running, and log attributes naming each one the file
// changed (key, then "running -> file"):
//
//   - state_dir: the proxy holds its lock, and every silo's data, socket
//     directory, id block and cgroups belong to it;
//   - base_root_dir: the roots of running silos are mounted below it;
//   - postgres.bindir: a different installation may be another major
//     version, which cannot open the existing data directories; restarting
//     the silos one by one on it would take every silo down.
//
// Like listen and admin addresses, they apply when the proxy restarts.
// next itself is not modified.
func pinRestartOnly(running, next *config.Config) (*config.Config, []any) {
	pinned := *next
	var changed []any
	for _, f := range []struct {
		key       string
		run, file *string
		clean     bool
	}{
		{"state_dir", &running.StateDir, &pinned.StateDir, true},
		{"base_root_dir", &running.BaseRootDir, &pinned.BaseRootDir, true},
		{"postgres.bindir", &running.Postgres.BinDir, &pinned.Postgres.BinDir, false},
	} {
		same := *f.run == *f.file
		if f.clean {
			same = filepath.Clean(*f.run) == filepath.Clean(*f.file)
		}
		if !same {
			changed = append(changed, f.key, *f.run+" -> "+*f.file)
		}
		*f.file = *f.run
	}
	return &pinned, changed
}

// MountInStateDirError: a silo's mount exposes the state_dir, which holds
// every silo's data directory, socket directory and password file.
type MountInStateDirError struct {
	Silo     string
	Mount    config.Mount
	StateDir string
}

func (e *MountInStateDirError) Error() string {
	return fmt.Sprintf("silo %s: mount %s -> %s (%s) overlaps the running state_dir %s, which holds every silo's data and socket directories",
		e.Silo, e.Mount.Source, e.Mount.Target, e.Mount.Origin, e.StateDir)
}

// checkMountsOutside refuses silos whose mounts' sources lie inside
// stateDir or contain it. Config validation checks the same against the
// file's own state_dir; this holds against the state_dir actually in use,
// at reload (where the two may differ) and again at every start.
func checkMountsOutside(stateDir string, silos []config.Silo) error {
	sd := filepath.Clean(stateDir)
	for _, s := range silos {
		for _, mt := range s.Mounts {
			src := filepath.Clean(mt.Source)
			if src == sd || strings.HasPrefix(sd, strings.TrimSuffix(src, "/")+"/") || strings.HasPrefix(src, sd+"/") {
				return &MountInStateDirError{Silo: s.Name, Mount: mt, StateDir: stateDir}
			}
		}
	}
	return nil
}

func (m *Manager) ensureInBackground(s *silo, proc siloProc, dbs []string) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := proc.ensureDatabases(ctx, dbs); err != nil {
			s.log.Error("creating the silo's new databases", "err", err.Error())
		}
	}()
}

// Shutdown stops every silo in mode and waits for them; when ctx ends
// first, the remaining silos are stopped immediately, then killed. The
// Manager accepts nothing afterwards.
func (m *Manager) Shutdown(ctx context.Context, mode StopMode) error {
	m.mu.Lock()
	m.closed = true
	m.parkCancel()
	var all []stopRequest
	for _, n := range m.order {
		s := m.silos[n]
		s.afterStop = nil
		s.reload = false
		all = append(all, m.requestStopLocked(s, mode))
	}
	m.unlock()
	err := m.waitStopped(ctx, all)
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(killGrace):
	}
	m.launcher.close()
	return err
}
