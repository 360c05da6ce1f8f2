package proxy

import (
	"context"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// Silos is everything the proxy needs from the silo lifecycle. It is a
// narrow interface of plain-data calls so the root-holding spawner can move
// behind a Unix socket while the network-facing proxy drops privileges.
// *spawner.Manager implements it.
type Silos interface {
	// Acquire returns a lease on a running silo, starting it first when it
	// is stopped and waiting up to its start_timeout. Errors wrap
	// spawner.ErrUnknownSilo, ErrTooManyClients, ErrUnavailable or
	// ErrDraining.
	Acquire(ctx context.Context, silo string) (*spawner.Lease, error)
	// Start starts a stopped silo (POST /silos/{name}/start).
	Start(ctx context.Context, silo string) error
	// Stop shuts the silo's postmaster down in the given mode.
	Stop(ctx context.Context, silo string, mode spawner.StopMode) error
	// Restart stops and starts the silo at once.
	Restart(ctx context.Context, silo string) error
	// Statuses returns a snapshot of every known silo, including draining ones.
	Statuses() []spawner.Status
	// Usage returns the silo's cgroup accounting, false when not available.
	Usage(silo string) (spawner.Usage, bool)
	// Reconfigure applies a new, already validated config: added silos
	// become available, removed ones drain, changed ones restart when idle.
	Reconfigure(cfg *config.Config) error
	// Shutdown stops every silo in the given mode.
	Shutdown(ctx context.Context, mode spawner.StopMode) error
}

// The spawner's Manager is the Silos of a running proxy.
var _ Silos = (*spawner.Manager)(nil)
