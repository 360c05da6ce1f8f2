package spawner

import (
	"context"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

// Parking. A cold start spends most of what it adds to the postmaster's
// own start before the postmaster runs: two Go runtime starts (silo-init
// re-executes itself so that the postmaster can be PID 2), new namespaces,
// the cgroup move, the mount plan, pivot_root, the privilege drop. None of
// it depends on the client that triggers the start. So when a silo stops
// (and for every stopped silo when the proxy starts), the launcher starts
// its silo-init right away and lets it do all of that; init then waits
// for the run byte with the postmaster's exec prepared. The next start
// sends the byte.
//
// A parked silo is stopped as far as anyone can see (GET /silos says
// stopped); it costs one idle silo-init process (a few MiB of memory, in
// the silo's cgroup) and the mounts of its namespace. It is used only for a
// start with the very configuration it was built from (the key) and bind
// sources that are still the same files (a package upgrade that replaced a
// library, or a data directory deleted and recreated, makes it stale);
// otherwise it is discarded and the start is a fresh one. It dies with the
// proxy like any silo: same parent-death signal, same lifeline pipe.

// parkConcurrency bounds how many sandboxes are built in the background at
// once, so that parking every silo at proxy start does not starve the
// starts clients wait for.
const parkConcurrency = 2

// parkedSilo is a silo-init waiting for the run byte.
type parkedSilo struct {
	key     string
	sources []fileID
	proc    *hostProcess
}

// fileID identifies a file across renames, and a replaced file from its
// predecessor.
type fileID struct{ dev, ino uint64 }

// bindSources returns the identity of every bind source of plan, in plan
// order; a source that cannot be stat'ed counts as the zero fileID.
func bindSources(plan fslayout.Plan) []fileID {
	var ids []fileID
	for _, op := range plan.Ops {
		if op.Kind != fslayout.OpBind && op.Kind != fslayout.OpDev {
			continue
		}
		var id fileID
		if fi, err := os.Stat(op.Source); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				id = fileID{dev: uint64(st.Dev), ino: st.Ino}
			}
		}
		ids = append(ids, id)
	}
	return ids
}

// lockSilo serialises the launcher's work on one silo: a start waits for a
// sandbox being parked (and then uses it), a park waits for a start.
func (l *hostLauncher) lockSilo(ctx context.Context, name string) (func(), error) {
	l.mu.Lock()
	slot := l.slots[name]
	if slot == nil {
		slot = make(chan struct{}, 1)
		l.slots[name] = slot
	}
	l.mu.Unlock()
	select {
	case slot <- struct{}{}:
		return func() { <-slot }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// park builds a sandbox for the stopped silo of req and leaves its
// silo-init waiting for the run byte, unless one built from the same
// configuration is parked already. wanted, asked before the work starts
// and before the result is kept, says whether the silo still is stopped
// (a start that came first makes the sandbox pointless). A silo without a
// data directory is not parked: its first start bootstraps. Failures are
// only logged: the start that would have used the sandbox starts afresh
// and reports them.
func (l *hostLauncher) park(ctx context.Context, req launchRequest, wanted func() bool) {
	name, log := req.Silo.Name, req.Log
	if !wanted() {
		return
	}
	select {
	case l.parkSem <- struct{}{}:
		defer func() { <-l.parkSem }()
	case <-ctx.Done():
		return
	case <-l.closing:
		return
	}
	unlock, err := l.lockSilo(ctx, name)
	if err != nil {
		return
	}
	defer unlock()
	if !wanted() {
		return
	}
	if _, err := os.Stat(req.Config.Paths(name).Data); err != nil {
		// Not bootstrapped yet (or gone): nothing is prepared for a
		// silo before its first start.
		l.discardParked(name)
		return
	}
	begin := time.Now()
	sb, err := l.newSandbox(req)
	if err == nil {
		err = l.planSandbox(sb)
	}
	if err != nil {
		log.Debug("not parking the silo", "err", err.Error())
		return
	}
	sources := bindSources(sb.ic.Plan)
	l.mu.Lock()
	pk := l.parked[name]
	l.mu.Unlock()
	if pk != nil && pk.key == sb.key && slices.Equal(pk.sources, sources) && !pk.proc.exited() {
		return
	}
	l.discardParked(name)
	if err := sb.checkReachable(); err != nil {
		log.Debug("not parking the silo", "err", err.Error())
		return
	}
	var cg *cgroup
	if !sb.ids.rootless {
		if cg, err = createCgroup(l.stateDir, name, req.Silo.Limits, l.log); err != nil {
			log.Debug("not parking the silo", "err", err.Error())
			return
		}
	}
	p, err := l.spawn(sb, sb.ic, cg, true)
	if err != nil {
		log.Debug("not parking the silo", "err", err.Error())
		return
	}
	l.mu.Lock()
	keep := !l.closed && wanted()
	if keep {
		l.parked[name] = &parkedSilo{key: sb.key, sources: sources, proc: p}
	}
	l.mu.Unlock()
	if !keep {
		p.kill()
		<-p.done()
		return
	}
	log.Debug("silo parked", "took", time.Since(begin).Round(10*time.Microsecond))
}

// takeParked returns sb's parked silo-init and forgets it, or nil when
// there is none that fits: built from another configuration, on bind
// sources that have been replaced since, or gone. An unfit one is
// discarded.
func (l *hostLauncher) takeParked(sb *sandbox) *hostProcess {
	l.mu.Lock()
	pk := l.parked[sb.req.Silo.Name]
	delete(l.parked, sb.req.Silo.Name)
	l.mu.Unlock()
	if pk == nil {
		return nil
	}
	why := ""
	switch {
	case pk.key != sb.key:
		why = "the configuration changed"
	case pk.proc.exited():
		why = "its silo-init exited"
	case !slices.Equal(pk.sources, bindSources(sb.ic.Plan)):
		why = "a bind source was replaced"
	}
	if why != "" {
		sb.req.Log.Debug("discarding the parked sandbox", "why", why)
		pk.proc.kill()
		<-pk.proc.done()
		return nil
	}
	return pk.proc
}

// discardParked ends the silo's parked silo-init, if any, and waits until
// it is gone and its cgroup removed.
func (l *hostLauncher) discardParked(name string) {
	l.mu.Lock()
	pk := l.parked[name]
	delete(l.parked, name)
	l.mu.Unlock()
	if pk != nil {
		pk.proc.kill()
		<-pk.proc.done()
	}
}

// unpark discards the silo's parked sandbox (a silo removed from the
// config).
func (l *hostLauncher) unpark(name string) {
	unlock, err := l.lockSilo(context.Background(), name)
	if err != nil {
		return
	}
	defer unlock()
	l.discardParked(name)
}

// closeParked discards every parked sandbox; the launcher takes no new
// ones once closed.
func (l *hostLauncher) closeParked() {
	l.mu.Lock()
	l.closed = true
	all := l.parked
	l.parked = map[string]*parkedSilo{}
	l.mu.Unlock()
	for _, pk := range all {
		pk.proc.kill()
	}
	for name, pk := range all {
		select {
		case <-pk.proc.done():
		case <-time.After(killGrace):
			l.log.Warn("a parked silo-init did not exit after SIGKILL", "silo", name)
		}
	}
}

// exited says whether silo-init has exited (and its resources are
// released).
func (p *hostProcess) exited() bool {
	select {
	case <-p.doneCh:
		return true
	default:
		return false
	}
}
