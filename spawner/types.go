// Package spawner owns the silo lifecycle: it launches one postmaster per
// silo inside fresh user, mount, pid, net, ipc and uts namespaces (through the
// silo-init re-exec mode), bootstraps new data directories, supervises and
// restarts postmasters, and counts the clients the proxy routes to each silo.
//
// The proxy talks to a *Manager only through plain-data methods (Acquire,
// Start, Stop, Restart, Statuses, Usage, Reconfigure, Shutdown) so that the
// root-holding part can later move into its own process behind a Unix socket.
package spawner

import (
	"errors"
	"sync"
	"time"
)

// State is a silo's lifecycle state as shown by GET /silos.
type State string

const (
	StateStopped  State = "stopped"
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateStopping State = "stopping"
	StateFailed   State = "failed"
	// StateDraining: removed from the config (or stopping on request) but
	// still serving its open sessions; it takes no new clients and stops
	// when the last one leaves.
	StateDraining State = "draining"
)

// StopMode is the PostgreSQL shutdown mode, and the signal sent to the
// postmaster: smart = SIGTERM, fast = SIGINT, immediate = SIGQUIT.
type StopMode int

const (
	StopSmart StopMode = iota
	StopFast
	StopImmediate
)

func (m StopMode) String() string {
	switch m {
	case StopSmart:
		return "smart"
	case StopFast:
		return "fast"
	case StopImmediate:
		return "immediate"
	}
	return "unknown"
}

// StartReason labels silo_proxy_silo_starts_total.
type StartReason string

const (
	StartCold    StartReason = "cold"    // first client for a stopped silo
	StartRestart StartReason = "restart" // supervisor restart after a crash
	StartManual  StartReason = "manual"  // POST /silos/{name}/start|restart
	StartReload  StartReason = "reload"  // restarted because its config changed
)

// Status is a snapshot of one silo, the JSON of GET /silos.
type Status struct {
	Name      string    `json:"name"`
	Databases []string  `json:"databases"`
	State     State     `json:"state"`
	Pid       int       `json:"pid"` // host pid of the postmaster, 0 when not running
	Clients   int       `json:"clients"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"last_error,omitempty"`
}

// Usage is a silo's cgroup accounting.
type Usage struct {
	MemoryBytes uint64
	CPUSeconds  float64
	Pids        uint64
}

// Observer receives lifecycle events; the proxy turns them into metrics.
// Calls are made synchronously from the spawner's goroutines and must not
// block.
type Observer interface {
	StateChanged(silo string, from, to State)
	SiloStarted(silo string, reason StartReason, took time.Duration)
	SiloExited(silo string, clean bool)
}

// Sentinel errors returned (wrapped) by Manager methods.
var (
	// ErrUnknownSilo: no silo of that name in the current config.
	ErrUnknownSilo = errors.New("unknown silo")
	// ErrTooManyClients: the silo already has max_clients leases.
	ErrTooManyClients = errors.New("too many clients for the silo")
	// ErrUnavailable: the silo did not become ready within start_timeout,
	// or it failed, or it is shutting down.
	ErrUnavailable = errors.New("silo unavailable")
	// ErrDraining: the silo takes no new clients.
	ErrDraining = errors.New("silo is draining")
	// ErrStateDirInUse: another silo-proxy holds the state_dir's lock.
	ErrStateDirInUse = errors.New("state_dir is in use by another silo-proxy")
)

// Lease is one client's claim on a running silo. The silo is not stopped for
// idleness, draining or a pending restart while leases are held.
type Lease struct {
	Silo       string
	SocketPath string // host path of the postmaster's .s.PGSQL.5432
	// ColdStart is true when the silo was stopped and Acquire started it
	// (the "cold" value of silo_proxy_connect_duration_seconds{start}).
	ColdStart bool
	once      sync.Once
	release   func()
}

// Release gives the lease back. It is safe to call more than once.
func (l *Lease) Release() {
	if l != nil && l.release != nil {
		l.once.Do(l.release)
	}
}

// NewLease builds a lease whose Release calls release once. It exists for
// alternative implementations of the proxy's silo interface (tests, a future
// remote spawner).
func NewLease(silo, socketPath string, release func()) *Lease {
	return &Lease{Silo: silo, SocketPath: socketPath, release: release}
}
