package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// Defaults of Options.
const (
	// DefaultLoginTimeout is the time a client has to complete its
	// startup packet, TLS handshake included (DESIGN.md §5).
	DefaultLoginTimeout = 10 * time.Second
	// DefaultReloadDebounce gathers the burst of events an editor's save
	// produces into one reload.
	DefaultReloadDebounce = 100 * time.Millisecond
	// DefaultSmartStopTimeout bounds the smart shutdown of silos at
	// proxy shutdown before it escalates to fast.
	DefaultSmartStopTimeout = 10 * time.Second
	// serverEOFLinger is how long a client may keep its side open after
	// the postmaster closed the session, before the proxy closes it: the
	// postmaster can no longer receive anything, and an idle client must
	// not pin the session's lease.
	serverEOFLinger = 5 * time.Second
	// errorLinger bounds how long the proxy drains a client after sending
	// it a FATAL ErrorResponse, so that closing a socket with unread input
	// does not reset the connection before the client read the error.
	errorLinger = time.Second
	// cancelTimeout bounds forwarding one CancelRequest to a postmaster.
	cancelTimeout = 2 * time.Second
)

// Options tune a Server. The zero value of each field selects its default.
type Options struct {
	Logger *slog.Logger
	// Metrics receives the proxy's metrics; pass the same value as the
	// spawner's Observer. Nil creates a private one.
	Metrics *Metrics
	// LoadConfig loads and validates the whole configuration file on
	// reload; the run command passes config.Load. Nil disables Reload.
	LoadConfig func(path string) (*config.Config, error)
	// WatchConfig reloads when the configuration file changes on disk.
	WatchConfig bool
	// LoginTimeout defaults to DefaultLoginTimeout (the contract value);
	// tests shorten it.
	LoginTimeout time.Duration
	// ReloadDebounce defaults to DefaultReloadDebounce.
	ReloadDebounce time.Duration
	// SmartStopTimeout defaults to DefaultSmartStopTimeout.
	SmartStopTimeout time.Duration
	// Relay selects how plaintext sessions are relayed; the zero value
	// is RelayLoop. TLS sessions always use RelayGoroutines.
	Relay RelayMode
	// ServerEOFLinger defaults to serverEOFLinger; tests shorten it.
	ServerEOFLinger time.Duration
}

// RelayMode is how a session's bytes are relayed once the startup packet
// has been forwarded.
type RelayMode int

const (
	// RelayLoop relays plaintext sessions on epoll loops, where the
	// platform has them (Linux), else on goroutines.
	RelayLoop RelayMode = iota
	// RelayGoroutines relays every session with two copier goroutines.
	RelayGoroutines
)

// ParseRelayMode parses the names "loop" and "goroutines" (the values of
// the SILO_PROXY_RELAY environment variable); "" is RelayLoop.
func ParseRelayMode(s string) (RelayMode, error) {
	switch s {
	case "", "loop":
		return RelayLoop, nil
	case "goroutines":
		return RelayGoroutines, nil
	}
	return 0, fmt.Errorf("relay mode %q: want loop or goroutines", s)
}

func (m RelayMode) String() string {
	if m == RelayGoroutines {
		return "goroutines"
	}
	return "loop"
}

// Server is the proxy: client listeners, sessions, admin HTTP and reloads.
type Server struct {
	log     *slog.Logger
	silos   Silos
	metrics *Metrics
	opts    Options

	routes  atomic.Pointer[routeTable]
	certs   certStore
	cancels *cancelMap

	// boot is the configuration the listeners were bound from; reloads
	// that change addresses only log that a restart is needed.
	boot *config.Config

	reloadMu sync.Mutex
	watcher  *configWatcher

	baseCtx    context.Context
	baseCancel context.CancelFunc

	ready    atomic.Bool
	serving  atomic.Bool
	nextID   atomic.Uint64
	tcpLn    *net.TCPListener
	unixLn   *net.UnixListener
	unixPath string
	adminLn  net.Listener
	admin    *http.Server

	mu      sync.Mutex
	closing bool
	// conns holds every client connection, with the function that ends
	// a session a relay loop took over (nil until then).
	conns       map[net.Conn]func()
	connsClosed bool // closeConns ran: sessions handed off later end at once
	sessions    sync.WaitGroup
	accepts     sync.WaitGroup
}

// New builds a Server for cfg, routing sessions to silos. It binds nothing
// until Start.
func New(cfg *config.Config, silos Silos, opts Options) (*Server, error) {
	if cfg == nil || silos == nil {
		return nil, errors.New("proxy: New needs a config and a Silos")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.LoginTimeout <= 0 {
		opts.LoginTimeout = DefaultLoginTimeout
	}
	if opts.ReloadDebounce <= 0 {
		opts.ReloadDebounce = DefaultReloadDebounce
	}
	if opts.SmartStopTimeout <= 0 {
		opts.SmartStopTimeout = DefaultSmartStopTimeout
	}
	if opts.ServerEOFLinger <= 0 {
		opts.ServerEOFLinger = serverEOFLinger
	}
	s := &Server{
		log:     opts.Logger,
		silos:   silos,
		metrics: opts.Metrics,
		opts:    opts,
		cancels: newCancelMap(),
		boot:    cfg,
		conns:   make(map[net.Conn]func()),
	}
	if cfg.TLS.Mode == config.TLSAllow || cfg.TLS.Mode == config.TLSRequire {
		if err := s.certs.load(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return nil, err
		}
	}
	rt := newRouteTable(cfg)
	s.routes.Store(rt)
	s.baseCtx, s.baseCancel = context.WithCancel(context.Background())
	s.metrics.usage.bind(func() ([]string, Silos) { return s.routes.Load().names(), s.silos })
	s.metrics.setSilos(rt.names(), nil)
	return s, nil
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Start binds the client listeners (TCP, and the Unix socket when
// unix_socket_dir is set) and the admin listener, starts serving them and
// watching the configuration file, and marks the server ready. It returns
// once everything is listening; on error nothing is left bound.
func (s *Server) Start() (err error) {
	cfg := s.boot
	defer func() {
		if err != nil {
			s.closeListeners()
			if s.admin != nil {
				s.admin.Close()
			} else if s.adminLn != nil {
				s.adminLn.Close()
			}
		}
	}()
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: 60 * time.Second, Interval: 15 * time.Second, Count: 4,
	}}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen.Address)
	if err != nil {
		return fmt.Errorf("proxy: listen %s: %w", cfg.Listen.Address, err)
	}
	s.tcpLn = ln.(*net.TCPListener)
	if cfg.Listen.UnixSocketDir != "" {
		s.unixLn, s.unixPath, err = listenUnixSocket(cfg.Listen.UnixSocketDir, cfg.Listen.Address)
		if err != nil {
			return err
		}
	}
	if cfg.Admin.Address != "" {
		s.adminLn, err = net.Listen("tcp", cfg.Admin.Address)
		if err != nil {
			return fmt.Errorf("proxy: listen admin %s: %w", cfg.Admin.Address, err)
		}
		s.admin = &http.Server{
			Handler:           s.adminHandler(),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		go func() {
			if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("admin HTTP server stopped", "err", err)
			}
		}()
	}
	if s.opts.WatchConfig && cfg.Path != "" {
		s.watcher, err = watchConfig(cfg.Path, s.opts.ReloadDebounce, s.log, func() {
			if err := s.Reload(); err != nil {
				s.log.Debug("reload after file change failed", "err", err)
			}
		})
		if err != nil {
			return err
		}
	}
	s.serving.Store(true)
	s.accepts.Add(1)
	go s.acceptLoop(s.tcpLn)
	if s.unixLn != nil {
		s.accepts.Add(1)
		go s.acceptLoop(s.unixLn)
	}
	s.ready.Store(true)
	s.log.Info("proxy listening", "address", s.tcpLn.Addr().String(), "unix_socket", s.unixPath,
		"admin", s.AdminAddr(), "tls", string(cfg.TLS.Mode))
	return nil
}

// Addr returns the bound TCP address of the client listener.
func (s *Server) Addr() net.Addr {
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// AdminAddr returns the bound admin address, "" when there is none.
func (s *Server) AdminAddr() string {
	if s.adminLn == nil {
		return ""
	}
	return s.adminLn.Addr().String()
}

// UnixSocketPath returns the path of the client Unix socket, "" when
// there is none.
func (s *Server) UnixSocketPath() string { return s.unixPath }

// Ready reports whether the server accepts clients: listeners up and not
// shutting down. /readyz answers with it.
func (s *Server) Ready() bool { return s.ready.Load() }

// acceptLoop serves one listener until it is closed.
func (s *Server) acceptLoop(ln net.Listener) {
	defer s.accepts.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off as net/http does, rather than
			// spin or give up serving.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else {
				backoff = min(2*backoff, time.Second)
			}
			s.log.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			continue
		}
		s.sessions.Add(1)
		go s.serveConn(c)
	}
}

// track registers a client connection so shutdown can close it; false
// when the server is closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = nil
	return true
}

// handOff records that a relay loop now carries c's session and that
// abort ends it: c itself is about to be closed.
func (s *Server) handOff(c net.Conn, abort func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		s.conns[c] = abort
	}
	if s.connsClosed {
		abort()
	}
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// closeListeners stops accepting clients and watching the config.
func (s *Server) closeListeners() {
	s.ready.Store(false)
	if s.tcpLn != nil {
		s.tcpLn.Close()
	}
	if s.unixLn != nil {
		// UnixListener.Close removes the socket file it created.
		s.unixLn.Close()
	}
	if s.watcher != nil {
		s.watcher.Close()
	}
}

// Shutdown stops the server. It stops accepting clients at once (/readyz
// turns 503), then:
//
//   - spawner.StopSmart: waits up to grace for open sessions to end, then
//     shuts the silos down smart, escalating to fast after
//     Options.SmartStopTimeout (PostgreSQL's smart mode waits for sessions
//     that already outlived the grace period);
//   - spawner.StopFast: shuts the silos down fast at once, which ends
//     every session with the postmaster's own FATAL message;
//   - spawner.StopImmediate: closes every client connection and shuts the
//     silos down immediately.
//
// Connections still open at the end are closed, the admin server last.
// ctx bounds the whole shutdown.
func (s *Server) Shutdown(ctx context.Context, mode spawner.StopMode, grace time.Duration) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.closeListeners()
	s.log.Info("shutting down", "mode", mode.String(), "grace", grace)

	var errs []error
	switch mode {
	case spawner.StopSmart:
		if !s.waitSessions(ctx, grace) {
			s.log.Info("sessions still open after the grace period; stopping silos")
		}
		sctx, cancel := context.WithTimeout(ctx, s.opts.SmartStopTimeout)
		err := s.silos.Shutdown(sctx, spawner.StopSmart)
		cancel()
		if err != nil {
			s.log.Warn("smart shutdown of silos did not finish; escalating to fast", "err", err)
			if err := s.silos.Shutdown(ctx, spawner.StopFast); err != nil {
				errs = append(errs, err)
			}
		}
	case spawner.StopFast:
		if err := s.silos.Shutdown(ctx, spawner.StopFast); err != nil {
			errs = append(errs, err)
		}
	default:
		s.closeConns()
		if err := s.silos.Shutdown(ctx, spawner.StopImmediate); err != nil {
			errs = append(errs, err)
		}
	}
	// Sessions whose postmaster went away end by themselves; give them a
	// moment to pass the postmaster's last message on, then cut the rest.
	s.waitSessions(ctx, time.Second)
	s.baseCancel()
	s.closeConns()
	s.waitSessions(ctx, 5*time.Second)
	s.accepts.Wait()
	if s.admin != nil {
		actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.admin.Shutdown(actx)
		cancel()
	}
	s.serving.Store(false)
	return errors.Join(errs...)
}

// waitSessions waits until no client connection is open, at most d or
// until ctx ends; it reports whether none is.
func (s *Server) waitSessions(ctx context.Context, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		s.sessions.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// closeConns closes every tracked client connection; their sessions then
// end and release their leases.
func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connsClosed = true
	for c, abort := range s.conns {
		if abort != nil {
			abort()
		} else {
			c.Close()
		}
	}
}

// Reload loads the configuration file again and applies it: the spawner
// reconfigures its silos, then the routing table is swapped atomically, so
// added silos are routable at once and removed ones get 3D000 while their
// open sessions continue. On any failure the running configuration stays,
// the error is logged in full and counted.
func (s *Server) Reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	err := s.reload()
	if err != nil {
		s.metrics.configReloads.WithLabelValues("failure").Inc()
		s.log.Error("config reload failed; keeping the running config", "err", err)
		return err
	}
	s.metrics.configReloads.WithLabelValues("success").Inc()
	return nil
}

func (s *Server) reload() error {
	cur := s.routes.Load().cfg
	if s.opts.LoadConfig == nil {
		return errors.New("reload: no config loader")
	}
	next, err := s.opts.LoadConfig(cur.Path)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if next.Path == "" {
		next.Path = cur.Path
	}
	var certs certStore
	if next.TLS.Mode == config.TLSAllow || next.TLS.Mode == config.TLSRequire {
		if err := certs.load(next.TLS.CertFile, next.TLS.KeyFile); err != nil {
			return fmt.Errorf("reload: %w", err)
		}
	}
	if err := s.silos.Reconfigure(next); err != nil {
		return fmt.Errorf("reload: reconfiguring silos: %w", err)
	}
	if c := certs.cert.Load(); c != nil {
		s.certs.cert.Store(c)
	}
	rt := newRouteTable(next)
	s.routes.Store(rt)
	if next.Listen != s.boot.Listen || next.Admin != s.boot.Admin {
		s.log.Warn("listen or admin addresses changed; they apply after a restart",
			"listen", next.Listen.Address, "unix_socket_dir", next.Listen.UnixSocketDir, "admin", next.Admin.Address)
	}
	s.metrics.setSilos(rt.names(), s.silos.Statuses())
	s.log.Info("config reloaded", "path", next.Path, "silos", len(next.Silos))
	return nil
}
