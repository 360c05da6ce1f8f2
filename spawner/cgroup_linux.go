package spawner

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/config"
)

// cgroup is one silo's cgroup: a directory named after the silo below
// silo-proxy-<instance hash> below the proxy's own cgroup, in the unified
// hierarchy and in every v1 hierarchy that carries a controller the unified
// one cannot provide. All methods are safe on a nil *cgroup, which stands
// for "this silo runs without a cgroup".
type cgroup struct {
	host *cgroupHost
	silo string
	// v2 is the silo's leaf in the unified hierarchy, "" when there is
	// none. It exists even when no controller is enabled there: it still
	// tracks membership and core cpu.stat.
	v2 string
	// ctrl maps memory, cpu, pids and cpuacct to the leaf directory
	// enforcing/accounting them: v2 or a v1 hierarchy's leaf.
	ctrl map[string]string
	// leaves lists the silo's directory in each hierarchy (made or, after
	// a restart, adopted); addProcess writes to all, destroy removes all.
	leaves []string
	// bases are the silo-proxy-<hash> directories the leaves live in.
	bases []string
}

// createCgroup creates (or reuses, after a proxy restart) the cgroup of
// silo and applies lim to it. instance identifies the proxy instance: the
// spawner passes the state directory, whose hash names the
// silo-proxy-<hash> directory grouping this proxy's silos, so several
// proxies on one host never share cgroups.
//
// Each controller comes from cgroup v2 when the proxy's own v2 cgroup is
// offered it and can hand it down (see cgroupHost.delegateV2), else from
// the v1 hierarchy carrying it. A configured limit that neither hierarchy
// can enforce is logged as a warning, once per call, and the silo runs
// without it: refusing to start would turn a host without a controller into
// an outage. Unset limits are written as unlimited.
//
// An error means a limit could not be written to a cgroup that exists, or
// the silo name is unusable; nothing created by the call is left behind.
func createCgroup(instance, silo string, lim config.Limits, log *slog.Logger) (*cgroup, error) {
	return cgroupHostState.create(instance, silo, lim, log)
}

// addProcess moves pid (silo-init, before it starts the postmaster) into
// every hierarchy of the silo's cgroup, so that the postmaster and all its
// backends are born inside it.
func (c *cgroup) addProcess(pid int) error {
	if c == nil {
		return nil
	}
	for _, dir := range c.leaves {
		p := filepath.Join(dir, "cgroup.procs")
		if err := c.host.fs.writeFile(p, strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("silo %s: %w", c.silo, &cgroupError{Op: "move", Path: p, Err: err})
		}
	}
	return nil
}

// usage reads the silo's memory, cpu time and task count. The bool is false
// when none of them could be read; a field whose controller is unavailable
// stays zero.
func (c *cgroup) usage() (Usage, bool) {
	if c == nil {
		return Usage{}, false
	}
	var u Usage
	ok := false
	cfs := c.host.fs
	if dir, found := c.ctrl[cgroupMemory]; found {
		file := "memory.usage_in_bytes"
		if dir == c.v2 {
			file = "memory.current"
		}
		if b, err := cfs.readFile(filepath.Join(dir, file)); err == nil {
			if v, err := cgroupParseValue(b); err == nil {
				u.MemoryBytes, ok = v, true
			}
		}
	}
	cpuDir, cpuV2 := c.ctrl[cgroupCPU], false
	if cpuDir != "" && cpuDir == c.v2 {
		cpuV2 = true
	}
	switch acct, found := c.ctrl[cgroupCPUAcct]; {
	case cpuV2 || (!found && c.v2 != ""):
		// cpu.stat is a core v2 file: it reports usage_usec whether or
		// not the cpu controller is enabled.
		if b, err := cfs.readFile(filepath.Join(c.v2, "cpu.stat")); err == nil {
			if v, found := cgroupParseKeyed(b, "usage_usec"); found {
				u.CPUSeconds, ok = float64(v)/1e6, true
			}
		}
	case found:
		if b, err := cfs.readFile(filepath.Join(acct, "cpuacct.usage")); err == nil {
			if v, err := cgroupParseValue(b); err == nil {
				u.CPUSeconds, ok = float64(v)/1e9, true
			}
		}
	}
	if dir, found := c.ctrl[cgroupPids]; found {
		if b, err := cfs.readFile(filepath.Join(dir, "pids.current")); err == nil {
			if v, err := cgroupParseValue(b); err == nil {
				u.Pids, ok = v, true
			}
		}
	}
	return u, ok
}

// destroy removes the silo's cgroup directories once the silo has stopped,
// and the silo-proxy-<hash> directories when no other silo uses them. It
// kills nothing: a cgroup that still holds tasks after a short wait (exiting
// tasks leave asynchronously) is reported with errCgroupBusy and left in
// place, because whatever is in it was not necessarily started by us.
func (c *cgroup) destroy() error {
	if c == nil {
		return nil
	}
	var errs []error
	// One deadline for all hierarchies: the same tasks occupy each of them.
	deadline := time.Now().Add(c.host.settle)
	var removed []string
	for _, dir := range c.leaves {
		if err := c.host.rmdirWait(dir, deadline); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, dir)
		}
	}
	c.host.mu.Lock()
	defer c.host.mu.Unlock()
	for _, dir := range removed {
		delete(c.host.live, dir)
	}
	for _, base := range c.bases {
		// Another silo's leaf keeps the base busy; that is expected.
		if err := c.host.fs.rmdir(base); err != nil && !errors.Is(err, fs.ErrNotExist) &&
			!errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, &cgroupError{Op: "rmdir", Path: base, Err: err})
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("silo %s: %w", c.silo, err)
	}
	return nil
}

// cgroupFS is the filesystem surface of cgroup management. It exists so
// the v2 delegation logic (which this project's CI hosts, being v1/v2
// hybrids, cannot exercise for real) is testable against a model of the
// kernel's rules.
type cgroupFS interface {
	readFile(path string) ([]byte, error)
	// writeFile writes value with a single write(2), never creating path.
	writeFile(path, value string) error
	mkdir(path string) error
	rmdir(path string) error
	// subdirs lists the names of the child cgroups of path.
	subdirs(path string) ([]string, error)
	// ppid returns the parent pid of pid.
	ppid(pid int) (int, error)
}

// cgroupHost is the process-wide view of the cgroup hierarchies. It is
// shared by every silo because the proxy's own cgroup, the controllers it
// enabled and its move into the supervisor leaf are process-wide facts.
type cgroupHost struct {
	fs   cgroupFS
	self int
	// discover finds the proxy's own cgroups; it runs once, because after
	// the move into <own>/supervisor /proc/self/cgroup no longer names
	// the cgroup the silos must live beside.
	discover func() (cgroupLayout, error)
	// settle is how long rmdirWait waits for exiting tasks to leave.
	settle time.Duration

	// mu serialises creation and base removal, so that a silo-proxy-<hash>
	// directory is never removed between another silo's mkdir of it and
	// of its leaf.
	mu         sync.Mutex
	layoutDone bool
	layout     cgroupLayout
	layoutErr  error
	// supervised: the proxy has moved itself into <own>/supervisor.
	supervised bool
	// live holds the leaves of the cgroups this process created and has
	// not destroyed: sweep never touches them.
	live map[string]bool
}

// cgroupHostState is the real host.
var cgroupHostState = &cgroupHost{
	fs:       cgroupOSFS{},
	self:     os.Getpid(),
	discover: cgroupDiscover,
	settle:   3 * time.Second,
}

// cgroupDiscover reads this process's cgroup membership and the
// cgroup mounts.
func cgroupDiscover() (cgroupLayout, error) {
	pc, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return cgroupLayout{}, err
	}
	lines, err := cgroupParseProcFile(pc)
	if err != nil {
		return cgroupLayout{}, err
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return cgroupLayout{}, err
	}
	mounts, err := cgroupParseMountinfo(mi)
	if err != nil {
		return cgroupLayout{}, err
	}
	return cgroupResolveLayout(lines, mounts), nil
}

func (h *cgroupHost) create(instance, silo string, lim config.Limits, log *slog.Logger) (*cgroup, error) {
	if err := cgroupValidName(silo); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("silo", silo)
	h.mu.Lock()
	defer h.mu.Unlock()
	layout, err := h.layoutLocked()
	if err != nil {
		return nil, err
	}
	base := cgroupInstanceDir(instance)
	c := &cgroup{host: h, silo: silo, ctrl: map[string]string{}}
	// why[ctrl] explains, for the warning, why a controller is missing.
	why := map[string]string{}

	// The cpu controller is joined only for a configured cpu limit. Placed
	// in a cpu cgroup, all of a silo's backends share one scheduling
	// weight, as if they were one process competing with every other
	// process on the host: with no limit asked for, that would throttle a
	// busy silo to a fraction of what the same postmaster gets outside any
	// silo. CPU time is still accounted: cpu.stat is a core v2 file, and
	// on v1 cpuacct is its own controller.
	wanted := []string{cgroupMemory, cgroupPids}
	if cgroupLimitSet(cgroupCPU, lim) {
		wanted = append(wanted, cgroupCPU)
	}

	onV2 := map[string]bool{}
	if layout.V2Dir != "" {
		for ctrl, reason := range h.delegateV2(layout, base, wanted, log) {
			if reason == "" {
				onV2[ctrl] = true
			} else {
				why[ctrl] = "cgroup v2: " + reason
			}
		}
		leaf := filepath.Join(layout.V2Dir, base, silo)
		if err := h.mkdirAll(layout.V2Dir, base, silo); err != nil {
			for ctrl := range onV2 {
				why[ctrl] = "cgroup v2: " + err.Error()
			}
			clear(onV2)
			log.Debug("no cgroup v2 directory for the silo", "err", err)
		} else {
			c.v2 = leaf
			c.leaves = append(c.leaves, leaf)
			c.bases = append(c.bases, filepath.Join(layout.V2Dir, base))
			for ctrl := range onV2 {
				c.ctrl[ctrl] = leaf
			}
		}
	}

	v1 := slices.Clone(wanted)
	if !onV2[cgroupCPU] {
		v1 = append(v1, cgroupCPUAcct)
	}
	for _, ctrl := range v1 {
		if onV2[ctrl] {
			continue
		}
		own, found := layout.V1Dirs[ctrl]
		if !found {
			if why[ctrl] == "" {
				why[ctrl] = "not mounted as a writable cgroup v1 hierarchy"
			} else {
				why[ctrl] += "; no writable cgroup v1 hierarchy either"
			}
			continue
		}
		leaf := filepath.Join(own, base, silo)
		if err := h.mkdirAll(own, base, silo); err != nil {
			why[ctrl] = strings.TrimPrefix(why[ctrl]+"; ", "; ") + "cgroup v1: " + err.Error()
			continue
		}
		c.ctrl[ctrl] = leaf
		if !slices.Contains(c.leaves, leaf) {
			c.leaves = append(c.leaves, leaf)
			c.bases = append(c.bases, filepath.Join(own, base))
		}
	}

	for _, ctrl := range wanted {
		dir, found := c.ctrl[ctrl]
		if !found {
			if cgroupLimitSet(ctrl, lim) {
				log.Warn("cgroup limit not applied: neither cgroup v2 nor v1 offers the controller; the silo runs without it",
					"controller", ctrl, "limit", cgroupLimitString(ctrl, lim), "reason", why[ctrl])
			}
			continue
		}
		writes, err := cgroupLimitWrites(ctrl, dir == c.v2, lim)
		if err == nil {
			err = h.applyWrites(dir, writes)
		}
		if err != nil && ctrl == cgroupCPU && dir != c.v2 && errors.Is(err, unix.EINVAL) && cgroupLimitSet(ctrl, lim) {
			// cgroup v1 refuses a CFS quota above an ancestor's (v2
			// accepts it and applies the smaller). The ancestor's quota
			// already bounds the silo, so run with that.
			log.Warn("cgroup cpu limit not applied: it exceeds the quota of the proxy's own cgroup, which bounds the silo instead",
				"limit", cgroupLimitString(ctrl, lim), "err", err.Error())
			err = h.applyWrites(dir, []cgroupWrite{{File: "cpu.cfs_quota_us", Value: "-1"}})
		}
		if err != nil {
			c.destroyLocked()
			return nil, fmt.Errorf("silo %s: setting the %s limit: %w", silo, ctrl, err)
		}
	}
	for _, leaf := range c.leaves {
		h.live[leaf] = true
	}
	log.Debug("silo cgroup ready", "v2", c.v2, "memory", c.ctrl[cgroupMemory],
		"cpu", c.ctrl[cgroupCPU], "pids", c.ctrl[cgroupPids], "cpuacct", c.ctrl[cgroupCPUAcct])
	return c, nil
}

// layoutLocked returns the proxy's own cgroups, discovering them on first
// use. h.mu must be held.
func (h *cgroupHost) layoutLocked() (cgroupLayout, error) {
	if !h.layoutDone {
		h.layout, h.layoutErr = h.discover()
		h.layoutDone = true
		h.live = map[string]bool{}
	}
	if h.layoutErr != nil {
		return cgroupLayout{}, fmt.Errorf("locating the proxy's cgroups: %w", h.layoutErr)
	}
	return h.layout, nil
}

// sweepCgroups removes the silo cgroups of the proxy instance whose
// state_dir is instance that no silo of this process uses: at start, those
// an earlier run left (a proxy that was killed could not remove them, and a
// silo dropped from the config meanwhile would never be created, and so
// removed, again); at shutdown, the silo-proxy-<hash> directories, once
// every silo's own cgroup is gone. Only empty directories go; a cgroup that
// still holds tasks is reported and kept. It returns the directories of the
// instance that remain.
func sweepCgroups(instance string, log *slog.Logger) ([]string, error) {
	return cgroupHostState.sweep(instance, log)
}

func (h *cgroupHost) sweep(instance string, log *slog.Logger) (remaining []string, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	layout, err := h.layoutLocked()
	if err != nil {
		return nil, err
	}
	base := cgroupInstanceDir(instance)
	owns := []string{}
	if layout.V2Dir != "" {
		owns = append(owns, layout.V2Dir)
	}
	for _, dir := range layout.V1Dirs {
		if !slices.Contains(owns, dir) {
			owns = append(owns, dir)
		}
	}
	slices.Sort(owns)
	var errs []error
	for _, own := range owns {
		baseDir := filepath.Join(own, base)
		names, err := h.fs.subdirs(baseDir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, &cgroupError{Op: "read", Path: baseDir, Err: err})
			remaining = append(remaining, baseDir)
			continue
		}
		for _, name := range names {
			leaf := filepath.Join(baseDir, name)
			if h.live[leaf] {
				remaining = append(remaining, leaf)
				continue
			}
			switch err := h.fs.rmdir(leaf); {
			case err == nil:
				log.Info("removed a silo cgroup no silo uses", "cgroup", leaf)
			case errors.Is(err, fs.ErrNotExist):
			case errors.Is(err, unix.EBUSY):
				log.Warn("a silo cgroup no silo of this proxy uses still has tasks; leaving it", "cgroup", leaf)
				remaining = append(remaining, leaf)
			default:
				errs = append(errs, &cgroupError{Op: "rmdir", Path: leaf, Err: err})
				remaining = append(remaining, leaf)
			}
		}
		switch err := h.fs.rmdir(baseDir); {
		case err == nil, errors.Is(err, fs.ErrNotExist):
		case errors.Is(err, unix.EBUSY), errors.Is(err, unix.ENOTEMPTY):
			remaining = append(remaining, baseDir)
		default:
			errs = append(errs, &cgroupError{Op: "rmdir", Path: baseDir, Err: err})
			remaining = append(remaining, baseDir)
		}
	}
	return remaining, errors.Join(errs...)
}

// destroyLocked removes what create made, with h.mu already held and
// without waiting: nothing has been added to the cgroup yet.
func (c *cgroup) destroyLocked() {
	for _, dir := range c.leaves {
		_ = c.host.fs.rmdir(dir)
	}
	for _, base := range c.bases {
		_ = c.host.fs.rmdir(base)
	}
}

// cgroupLimitString renders the configured limit of ctrl for a log line.
func cgroupLimitString(ctrl string, lim config.Limits) string {
	switch ctrl {
	case cgroupMemory:
		return strconv.FormatInt(lim.MemoryBytes, 10) + " bytes"
	case cgroupCPU:
		return strconv.FormatFloat(lim.CPU, 'g', -1, 64) + " cpu"
	case cgroupPids:
		return strconv.FormatInt(lim.Pids, 10) + " tasks"
	}
	return ""
}

// mkdirAll creates own/base/silo, never creating own itself: the proxy
// only ever creates cgroups below its own.
func (h *cgroupHost) mkdirAll(own, base, silo string) error {
	for _, dir := range []string{filepath.Join(own, base), filepath.Join(own, base, silo)} {
		if err := h.fs.mkdir(dir); err != nil && !errors.Is(err, fs.ErrExist) {
			return &cgroupError{Op: "mkdir", Path: dir, Err: err}
		}
	}
	return nil
}

// applyWrites writes the limit values, skipping optional files the kernel
// does not provide.
func (h *cgroupHost) applyWrites(dir string, writes []cgroupWrite) error {
	for _, w := range writes {
		p := filepath.Join(dir, w.File)
		if err := h.fs.writeFile(p, w.Value); err != nil {
			if w.Optional && errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return &cgroupError{Op: "write " + strconv.Quote(w.Value) + " to", Path: p, Err: err}
		}
	}
	return nil
}

// delegateV2 makes memory, cpu and pids available to the children of
// <own>/<base> in the unified hierarchy. It returns, per controller, "" when
// the controller is usable there or the reason it is not.
//
// A v2 controller reaches a silo's leaf only if it is enabled in
// cgroup.subtree_control of every ancestor below the one offering it, and
// the kernel refuses to enable controllers in the subtree_control of a
// non-root cgroup that holds processes ("no internal processes"). The proxy
// lives in <own>, so when the kernel answers EBUSY (<own> is not the root,
// or is the root of a container's cgroup namespace only) the proxy first
// moves itself (and any silo-init it already started) into
// <own>/supervisor.
// That is only legitimate when <own> belongs to the proxy alone, as with a
// systemd unit with Delegate=yes; if other processes share it, they are
// left alone and the controller falls back to v1 or goes without.
func (h *cgroupHost) delegateV2(layout cgroupLayout, base string, wanted []string, log *slog.Logger) map[string]string {
	out := map[string]string{}
	own := layout.V2Dir
	offered, err := h.fs.readFile(filepath.Join(own, "cgroup.controllers"))
	if err != nil {
		for _, ctrl := range wanted {
			out[ctrl] = err.Error()
		}
		return out
	}
	baseDir := filepath.Join(own, base)
	for _, ctrl := range wanted {
		if !slices.Contains(strings.Fields(string(offered)), ctrl) {
			out[ctrl] = fmt.Sprintf("controller not offered to %s (cgroup.controllers)", own)
			continue
		}
		// Even a cgroup that looks like the root may be the root of a
		// cgroup namespace only, bound by the rule: let EBUSY decide.
		if err := h.enableV2(own, ctrl, true, log); err != nil {
			out[ctrl] = err.Error()
			continue
		}
		if err := h.fs.mkdir(baseDir); err != nil && !errors.Is(err, fs.ErrExist) {
			out[ctrl] = (&cgroupError{Op: "mkdir", Path: baseDir, Err: err}).Error()
			continue
		}
		if err := h.enableV2(baseDir, ctrl, false, log); err != nil {
			out[ctrl] = err.Error()
			continue
		}
		out[ctrl] = ""
	}
	return out
}

// enableV2 enables ctrl in dir's cgroup.subtree_control. When the kernel
// answers EBUSY because dir holds processes and mayMove is set, it moves the
// proxy into dir/supervisor and tries again.
func (h *cgroupHost) enableV2(dir, ctrl string, mayMove bool, log *slog.Logger) error {
	sc := filepath.Join(dir, "cgroup.subtree_control")
	if b, err := h.fs.readFile(sc); err == nil && slices.Contains(strings.Fields(string(b)), ctrl) {
		return nil
	}
	err := h.fs.writeFile(sc, "+"+ctrl)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EBUSY) || !mayMove || h.supervised {
		return &cgroupError{Op: "write +" + ctrl + " to", Path: sc, Err: err}
	}
	if err := h.moveToSupervisor(dir, log); err != nil {
		return err
	}
	if err := h.fs.writeFile(sc, "+"+ctrl); err != nil {
		return &cgroupError{Op: "write +" + ctrl + " to", Path: sc, Err: err}
	}
	return nil
}

// moveToSupervisor empties the proxy's own v2 cgroup by moving the proxy,
// and the silo-inits it started that are still there, into
// own/supervisor. It refuses when own holds a process the proxy did not
// start: moving it would reach outside what the proxy owns.
func (h *cgroupHost) moveToSupervisor(own string, log *slog.Logger) error {
	procsFile := filepath.Join(own, "cgroup.procs")
	b, err := h.fs.readFile(procsFile)
	if err != nil {
		return &cgroupError{Op: "read", Path: procsFile, Err: err}
	}
	pids, err := cgroupParsePids(b)
	if err != nil {
		return &cgroupError{Op: "read", Path: procsFile, Err: err}
	}
	for _, pid := range pids {
		if pid == h.self {
			continue
		}
		if pp, err := h.fs.ppid(pid); err != nil || pp != h.self {
			if errors.Is(err, fs.ErrNotExist) {
				continue // exited meanwhile
			}
			return fmt.Errorf("the proxy's cgroup %s also holds process %d, which silo-proxy did not start; "+
				"run silo-proxy in a cgroup of its own (systemd: Delegate=yes)", own, pid)
		}
	}
	sup := filepath.Join(own, cgroupSupervisor)
	if err := h.fs.mkdir(sup); err != nil && !errors.Is(err, fs.ErrExist) {
		return &cgroupError{Op: "mkdir", Path: sup, Err: err}
	}
	// Ourselves first: if that fails nothing else has moved.
	slices.SortStableFunc(pids, func(a, b int) int {
		switch {
		case a == h.self:
			return -1
		case b == h.self:
			return 1
		}
		return 0
	})
	for _, pid := range pids {
		err := h.fs.writeFile(filepath.Join(sup, "cgroup.procs"), strconv.Itoa(pid))
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return &cgroupError{Op: "move", Path: filepath.Join(sup, "cgroup.procs"), Err: err}
		}
	}
	h.supervised = true
	log.Info("moved silo-proxy into a leaf cgroup so that controllers can be delegated to silos", "cgroup", sup)
	return nil
}

// rmdirWait removes dir, retrying while tasks that are exiting still
// occupy it. It reports the tasks that remain at the deadline.
func (h *cgroupHost) rmdirWait(dir string, deadline time.Time) error {
	for {
		err := h.fs.rmdir(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			return &cgroupError{Op: "rmdir", Path: dir, Err: err}
		}
		if time.Now().After(deadline) {
			var pids []int
			if b, rerr := h.fs.readFile(filepath.Join(dir, "cgroup.procs")); rerr == nil {
				pids, _ = cgroupParsePids(b)
			}
			return &cgroupError{Op: "rmdir", Path: dir,
				Err: fmt.Errorf("%w: pids %v", errCgroupBusy, pids)}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cgroupParsePids parses cgroup.procs: one pid per line.
func cgroupParsePids(b []byte) ([]int, error) {
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		pids = append(pids, n)
	}
	return pids, nil
}

// cgroupOSFS is cgroupFS on the real cgroup filesystems.
type cgroupOSFS struct{}

func (cgroupOSFS) readFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (cgroupOSFS) writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	// cgroupfs parses each write(2) on its own: the value must go in one.
	_, werr := f.Write([]byte(value))
	cerr := f.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

func (cgroupOSFS) mkdir(path string) error { return os.Mkdir(path, 0o755) }

func (cgroupOSFS) subdirs(path string) ([]string, error) {
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

func (cgroupOSFS) rmdir(path string) error {
	if err := unix.Rmdir(path); err != nil {
		return &os.PathError{Op: "rmdir", Path: path, Err: err}
	}
	return nil
}

func (cgroupOSFS) ppid(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return cgroupParseStatPPid(b)
}

// cgroupParseStatPPid extracts the parent pid from /proc/<pid>/stat. The command
// name in parentheses may contain spaces and ')', so fields are counted
// from the last ')'.
func cgroupParseStatPPid(b []byte) (int, error) {
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/pid/stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("malformed /proc/pid/stat")
	}
	return strconv.Atoi(f[1])
}
