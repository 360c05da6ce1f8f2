package spawner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
)

// Paths inside the bootstrap sandbox only: the superuser password initdb
// reads with --pwfile lives on a tmpfs that only the silo's postgres uid
// can enter, and that the running silo never has.
const (
	bootstrapSecretDir = "/run/silo-bootstrap"
	bootstrapPwFile    = bootstrapSecretDir + "/pwfile"
)

// hbaConf is the whole pg_hba.conf of every silo: the postmaster listens
// on its Unix socket only (listen_addresses=”), and every login, the
// proxy's clients and the spawner's own, authenticates with SCRAM.
const hbaConf = "# Written by silo-proxy. The postmaster listens only on its Unix socket\n" +
	"# (listen_addresses=''), and every session authenticates with SCRAM.\n" +
	"local all all scram-sha-256\n"

// readyLogLine is what the postmaster logs once it accepts sessions.
const readyLogLine = "database system is ready to accept connections"

// socketName is the postmaster's socket in the silo's socket directory;
// the port is forced to 5432 on the command line.
const socketName = ".s.PGSQL.5432"

// killGrace is how long a silo that was sent SIGKILL (or whose proxy pipe
// closed) may take to disappear before its cleanup stops waiting for its
// log pipe.
const killGrace = 5 * time.Second

// hostLauncher starts silos on this host: it prepares their directories,
// id ranges and passwords, bootstraps new data directories, and runs
// silo-init through a re-exec of Executable.
type hostLauncher struct {
	exe      string
	mode     Mode
	ids      *idAllocator
	log      *slog.Logger
	stateDir string
	lockFile *os.File

	// forks carries cmd.Start calls to the forker thread; closing ends it.
	forks     chan func()
	closing   chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	installs map[string]fslayout.Install
	plans    map[string]fslayout.Plan
	// slots serialise the work on each silo (see lockSilo).
	slots map[string]chan struct{}
	// parked holds the silos' parked silo-inits (see park).
	parked  map[string]*parkedSilo
	parkSem chan struct{}
	closed  bool // no more parking
}

// newHostLauncher takes the state_dir lock (one proxy per state_dir: two
// would hand out the same id ranges and race on data directories).
func newHostLauncher(cfg *config.Config, exe string, log *slog.Logger) (*hostLauncher, error) {
	mode, why := DetectMode()
	if mode == ModeUnavailable {
		return nil, fmt.Errorf("cannot run silos: %s", why)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o711); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	log.Info("silo isolation mode", "mode", string(mode), "why", why)
	if mode == ModePrivileged {
		// Cgroups a killed predecessor on this state_dir left behind.
		if _, err := sweepCgroups(cfg.StateDir, log); err != nil {
			log.Warn("removing leftover silo cgroups", "err", err.Error())
		}
	}
	l := &hostLauncher{
		exe:      exe,
		mode:     mode,
		ids:      &idAllocator{stateDir: cfg.StateDir, hostFiles: os.ReadFile, procRoot: "/proc"},
		log:      log,
		stateDir: cfg.StateDir,
		lockFile: lock,
		installs: map[string]fslayout.Install{},
		plans:    map[string]fslayout.Plan{},
		slots:    map[string]chan struct{}{},
		parked:   map[string]*parkedSilo{},
		parkSem:  make(chan struct{}, parkConcurrency),
		forks:    make(chan func()),
		closing:  make(chan struct{}),
	}
	go l.forker()
	return l, nil
}

// lockStateDir takes the exclusive lock of <stateDir>/lock, which exists
// for as long as a proxy runs on stateDir: two proxies would hand out the
// same id ranges and race on data directories and cgroups.
func lockStateDir(stateDir string) (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(stateDir, "lock"), os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s (lock %s held): %w", stateDir, lock.Name(), ErrStateDirInUse)
		}
		return nil, fmt.Errorf("state_dir lock: %w", err)
	}
	return lock, nil
}

// SweepCgroups removes the cgroups a silo-proxy on stateDir left behind,
// as that proxy does itself when it starts and when it shuts down: every
// empty silo cgroup below its silo-proxy-<hash> directories, then those
// directories, in every hierarchy. A cgroup that still holds tasks is never
// removed. It returns the instance's directories that remain.
//
// It is for tools and tests that clean up after a proxy that was killed:
// it takes the state_dir lock, and fails with ErrStateDirInUse while a
// proxy runs on stateDir (whose cgroups are not its to touch). A stateDir
// that does not exist has no proxy and no lock; its cgroups are swept all
// the same.
func SweepCgroups(stateDir string, log *slog.Logger) (remaining []string, err error) {
	lock, err := lockStateDir(stateDir)
	switch {
	case err == nil:
		defer lock.Close()
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, err
	}
	return sweepCgroups(stateDir, log)
}

// forker runs every fork of silo-init on one OS thread, locked for the
// launcher's lifetime. Pdeathsig fires when the *thread* that forked the
// child ends (go.dev/issue/27505): had silo-init been forked from an
// ordinary goroutine's thread, and had some other goroutine later locked
// that thread and exited, the kernel would have killed a healthy silo.
// No other goroutine ever runs on this thread. It ends (and the kernel
// kills whatever it forked that still runs) only when the launcher is
// closed, after the Manager stopped every silo.
func (l *hostLauncher) forker() {
	runtime.LockOSThread()
	for {
		select {
		case f := <-l.forks:
			f()
		case <-l.closing:
			return
		}
	}
}

// errLauncherClosed: a start raced with the Manager's shutdown.
var errLauncherClosed = errors.New("the spawner is shut down")

// onForker runs f on the forker thread and waits for it.
func (l *hostLauncher) onForker(f func()) error {
	done := make(chan struct{})
	select {
	case l.forks <- func() {
		defer close(done)
		f()
	}:
	case <-l.closing:
		return errLauncherClosed
	}
	<-done
	return nil
}

// newLauncher returns the launcher of this platform.
func newLauncher(cfg *config.Config, exe string, log *slog.Logger) (launcher, error) {
	return newHostLauncher(cfg, exe, log)
}

// close discards the parked sandboxes, ends the forker thread and, once
// the Manager has stopped every silo, removes the instance's
// silo-proxy-<hash> cgroup directories (with any silo cgroup left empty),
// then releases the state_dir lock.
func (l *hostLauncher) close() {
	l.closeOnce.Do(func() {
		l.closeParked()
		close(l.closing)
		if l.mode == ModePrivileged {
			if remaining, err := sweepCgroups(l.stateDir, l.log); err != nil {
				l.log.Warn("removing the proxy's cgroups", "err", err.Error())
			} else if len(remaining) > 0 {
				l.log.Warn("cgroups left in place: they still hold tasks", "cgroups", remaining)
			}
		}
		if l.lockFile != nil {
			l.lockFile.Close()
		}
	})
}

func (l *hostLauncher) install(bindir string) (fslayout.Install, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if inst, ok := l.installs[bindir]; ok {
		return inst, nil
	}
	inst, err := fslayout.FindInstall(bindir)
	if err != nil {
		return fslayout.Install{}, err
	}
	l.installs[bindir] = inst
	return inst, nil
}

// plan computes (once per distinct spec) a silo's mount plan. Build reads
// ELF files; caching keeps it out of every cold start.
func (l *hostLauncher) plan(spec fslayout.Spec) (fslayout.Plan, error) {
	key, err := json.Marshal(spec)
	if err != nil {
		return fslayout.Plan{}, err
	}
	l.mu.Lock()
	p, ok := l.plans[string(key)]
	l.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err = fslayout.Build(spec)
	if err != nil {
		return fslayout.Plan{}, err
	}
	l.mu.Lock()
	l.plans[string(key)] = p
	l.mu.Unlock()
	return p, nil
}

// forgetPlan drops spec's cached plan.
func (l *hostLauncher) forgetPlan(spec fslayout.Spec) {
	key, err := json.Marshal(spec)
	if err != nil {
		return
	}
	l.mu.Lock()
	delete(l.plans, string(key))
	l.mu.Unlock()
}

// idSetup is how a silo's user namespace maps ids.
type idSetup struct {
	rootless bool
	rng      IDRange // privileged: the silo's block
	uid, gid int     // rootless: the proxy's own ids
}

// hostID returns the host id of the namespace id n (the silo user 1000 in
// rootless mode, the only one mapped).
func (s idSetup) hostID(n int) int {
	if s.rootless {
		return s.uid
	}
	return s.rng.HostUID(n)
}

func (s idSetup) hostGID(n int) int {
	if s.rootless {
		return s.gid
	}
	return s.rng.HostUID(n)
}

// sysProcAttr returns the clone attributes of silo-init.
func (s idSetup) sysProcAttr(network config.Network) *syscall.SysProcAttr {
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS)
	if network != config.NetworkHost {
		flags |= unix.CLONE_NEWNET
	}
	attr := &syscall.SysProcAttr{
		Cloneflags: flags,
		// SIGKILL when the proxy (the thread that started us) dies; the
		// config pipe's EOF covers the cases Pdeathsig misses.
		Pdeathsig: syscall.SIGKILL,
		// A session of its own: a Ctrl-C on the proxy's terminal must not
		// reach the postmasters past the proxy's orderly shutdown.
		Setsid: true,
	}
	if s.rootless {
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: fslayout.PostgresUID, HostID: s.uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: fslayout.PostgresGID, HostID: s.gid, Size: 1}}
		attr.Credential = &syscall.Credential{Uid: fslayout.PostgresUID, Gid: fslayout.PostgresGID, NoSetGroups: true}
		// CAP_SYS_ADMIN builds the root; CAP_SETPCAP lets init empty its
		// bounding set before the postmaster starts; CAP_NET_ADMIN brings
		// up lo in the silo's own network namespace.
		attr.AmbientCaps = []uintptr{capSysAdmin, capSetPCap}
		if network != config.NetworkHost {
			attr.AmbientCaps = append(attr.AmbientCaps, capNetAdmin)
		}
		return attr
	}
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(s.rng.HostID), Size: int(s.rng.Size)}}
	attr.UidMappings = m
	attr.GidMappings = m
	// A privileged parent may allow setgroups: init's Credential then
	// clears the supplementary groups it inherited from the proxy (the
	// host's gid 0 among them), which would otherwise keep granting
	// group access to host files from inside the silo.
	attr.GidMappingsEnableSetgroups = true
	attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	return attr
}

// launchRequest is everything needed to start one silo.
type launchRequest struct {
	Config *config.Config
	Silo   config.Silo
	Log    *slog.Logger
}

// siloProc is a running silo as the Manager sees it.
type siloProc interface {
	// pid is the host pid of the postmaster.
	pid() int
	// shutdown asks the postmaster to stop in the given mode.
	shutdown(mode StopMode) error
	// kill ends the whole silo at once (SIGKILL to silo-init).
	kill()
	// done is closed once silo-init has exited and every resource of the
	// silo is released.
	done() <-chan struct{}
	// exitErr is nil when the postmaster exited with status 0, else why
	// the silo ended. Valid after done.
	exitErr() error
	usage() (Usage, bool)
	// ensureDatabases creates the databases of dbs that do not exist yet.
	ensureDatabases(ctx context.Context, dbs []string) error
}

// launcher starts silos; the Manager's tests substitute a fake.
type launcher interface {
	launch(ctx context.Context, req launchRequest) (siloProc, error)
	// park prepares the stopped silo of req so that its next launch is
	// quick; wanted says whether the silo still is stopped. It may do
	// nothing.
	park(ctx context.Context, req launchRequest, wanted func() bool)
	// unpark releases what park holds for the silo.
	unpark(name string)
	close()
}

// launch prepares, bootstraps if needed, and starts the silo, and returns
// once its postmaster accepts connections and every listed database
// exists. A sandbox parked for the silo with the same configuration (see
// park) is used when there is one: its start is then only the postmaster's.
// Cancelling ctx kills a silo that is not ready yet.
func (l *hostLauncher) launch(ctx context.Context, req launchRequest) (siloProc, error) {
	phases := newPhaseTimer()
	unlock, err := l.lockSilo(ctx, req.Silo.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	sb, err := l.newSandbox(req)
	if err != nil {
		return nil, err
	}
	phases.mark("prepare")
	p, err := l.start(ctx, sb, phases)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// sandbox is one start of a silo, as far as it is known before silo-init
// runs.
type sandbox struct {
	req      launchRequest
	inst     fslayout.Install
	paths    config.SiloPaths
	ids      idSetup
	password string
	spec     fslayout.Spec
	// ic is the config silo-init gets; nil until the plan is known (after
	// a bootstrap for a new data directory).
	ic *initConfig
	// key identifies the configuration of ic, the ids, the network and the
	// limits: a parked sandbox serves a start only if the keys match.
	key string
}

// newSandbox checks req and prepares the silo's host side: directories,
// id block, password.
func (l *hostLauncher) newSandbox(req launchRequest) (*sandbox, error) {
	cfg, silo := req.Config, req.Silo
	if cfg.StateDir != l.stateDir {
		return nil, fmt.Errorf("BUG: state_dir changed from %s to %s", l.stateDir, cfg.StateDir)
	}
	if err := checkMountsOutside(l.stateDir, []config.Silo{silo}); err != nil {
		return nil, err
	}
	inst, err := l.install(cfg.Postgres.BinDir)
	if err != nil {
		return nil, err
	}
	paths := cfg.Paths(silo.Name)
	ids, err := l.idSetup(silo.Name)
	if err != nil {
		return nil, err
	}
	if err := prepareDirs(cfg, paths, ids); err != nil {
		return nil, err
	}
	password, err := superuserPassword(silo, paths)
	if err != nil {
		return nil, err
	}
	return &sandbox{req: req, inst: inst, paths: paths, ids: ids, password: password,
		spec: fslayout.Spec{
			Silo:      silo.Name,
			Layout:    silo.Layout,
			Install:   inst,
			DataDir:   paths.Data,
			SocketDir: paths.Run,
			Mounts:    silo.Mounts,
		}}, nil
}

// planSandbox computes the silo's mount plan and silo-init's config for a
// data directory that exists.
func (l *hostLauncher) planSandbox(sb *sandbox) error {
	plan, err := l.plan(sb.spec)
	if err != nil {
		return err
	}
	silo := sb.req.Silo
	ic := l.initConfig(silo, sb.paths, plan, sb.ids)
	ic.Postmaster = postmasterCommand(silo, sb.inst)
	key, err := json.Marshal(struct {
		Init    *initConfig
		Network config.Network
		Limits  config.Limits
		IDs     idSetup
	}{ic, silo.Network, silo.Limits, sb.ids})
	if err != nil {
		return err
	}
	sb.ic, sb.key = ic, string(key)
	return nil
}

// checkReachable checks, before silo-init is spawned on sb's plan, that
// the silo's ids reach every bind source (see checkReachable). A parked
// sandbox has bound them already.
func (sb *sandbox) checkReachable() error {
	if sb.ids.rootless {
		return nil
	}
	return checkReachable(sb.ic.Plan, sb.ids.rng)
}

// start starts sb's silo: from its parked sandbox when it has a matching
// one, else from scratch (bootstrapping a new data directory first).
func (l *hostLauncher) start(ctx context.Context, sb *sandbox, phases *phaseTimer) (*hostProcess, error) {
	silo, log := sb.req.Silo, sb.req.Log
	var cg *cgroup
	// cg is the fresh start's until silo-init owns it.
	cgOwned := false
	defer func() {
		if !cgOwned {
			if err := cg.destroy(); err != nil {
				log.Warn("removing the silo's cgroup", "err", err.Error())
			}
		}
	}()
	newCgroup := func() error {
		if sb.ids.rootless || cg != nil {
			return nil
		}
		var err error
		cg, err = createCgroup(l.stateDir, silo.Name, silo.Limits, l.log)
		return err
	}
	if _, err := os.Stat(sb.paths.Data); errors.Is(err, fs.ErrNotExist) {
		l.discardParked(silo.Name)
		if err := newCgroup(); err != nil {
			return nil, err
		}
		if err := l.bootstrap(ctx, sb, cg); err != nil {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		phases.mark("bootstrap")
	} else if err != nil {
		return nil, err
	}
	// A failed start may come from a plan the host has outgrown (a
	// package upgrade moved a library): the next attempt computes it anew.
	started := false
	defer func() {
		if !started {
			l.forgetPlan(sb.spec)
		}
	}()
	if err := l.planSandbox(sb); err != nil {
		return nil, err
	}
	phases.mark("plan")
	// A socket or lock file left by a postmaster that was killed would
	// only confuse the readiness probe; nothing else can be using the
	// directory while we hold the state_dir lock.
	for _, n := range []string{socketName, socketName + ".lock"} {
		os.Remove(filepath.Join(sb.paths.Run, n))
	}
	p := l.takeParked(sb)
	if p != nil {
		if err := p.run(); err != nil {
			// The parked init is gone (killed, or it failed to build
			// the sandbox): start from scratch, which reports why.
			log.Debug("the parked sandbox is gone; starting afresh", "err", err.Error())
			p.kill()
			<-p.done()
			p = nil
		} else {
			phases.mark("parked")
		}
	}
	if p == nil {
		if err := sb.checkReachable(); err != nil {
			return nil, err
		}
		if err := newCgroup(); err != nil {
			return nil, err
		}
		phases.mark("cgroup")
		var err error
		cgOwned = true // by the process, whether or not it starts
		if p, err = l.spawn(sb, sb.ic, cg, true); err != nil {
			return nil, err
		}
		if err := p.run(); err != nil {
			return nil, p.fail(err)
		}
		phases.mark("spawn")
	}
	p.socketDir = sb.paths.Run
	p.password = sb.password
	p.dbMarker = filepath.Join(sb.paths.Dir, "databases")
	if err := p.waitStarted(ctx); err != nil {
		p.kill()
		<-p.done()
		return nil, err
	}
	phases.mark("root")
	if err := waitReady(ctx, filepath.Join(sb.paths.Run, socketName), p.done(), p.readyHint); err != nil {
		p.kill()
		<-p.done()
		if perr := p.exitErr(); perr != nil {
			return nil, perr
		}
		return nil, err
	}
	phases.mark("postmaster")
	if err := p.ensureDatabases(ctx, listedDatabases(silo.Databases)); err != nil {
		p.kill()
		<-p.done()
		return nil, err
	}
	phases.mark("databases")
	log.Debug("silo start phases", phases.attrs()...)
	started = true
	return p, nil
}

func (l *hostLauncher) idSetup(silo string) (idSetup, error) {
	if l.mode == ModeRootless {
		return idSetup{rootless: true, uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r, err := l.ids.rangeFor(silo)
	if err != nil {
		return idSetup{}, err
	}
	return idSetup{rng: r}, nil
}

func (l *hostLauncher) initConfig(silo config.Silo, paths config.SiloPaths, plan fslayout.Plan, ids idSetup) *initConfig {
	host := silo.Name
	if len(host) > 64 {
		host = host[:64] // HOST_NAME_MAX
	}
	return &initConfig{
		Silo:      silo.Name,
		Root:      paths.Root,
		Plan:      plan,
		Hostname:  host,
		UID:       fslayout.PostgresUID,
		GID:       fslayout.PostgresGID,
		SetGroups: !ids.rootless,
		Rootless:  ids.rootless,
		Seccomp:   silo.Seccomp,
		Loopback:  silo.Network != config.NetworkHost,
	}
}

// siloEnv is the environment of initdb and the postmaster: nothing of the
// proxy's own environment leaks into a silo.
func siloEnv(inst fslayout.Install) []string {
	return []string{
		"PATH=" + inst.BinDir + ":/usr/bin:/bin",
		"HOME=" + filepath.Dir(fslayout.DataTarget),
		"LC_ALL=C",
		"TZ=" + hostTimeZone(),
	}
}

// postmasterCommand builds the postmaster's command line. The settings the
// silo depends on come last, so postgres_settings cannot override them:
// no TCP listener, the socket in /run/postgresql, port 5432 (the socket's
// name).
func postmasterCommand(silo config.Silo, inst fslayout.Install) *initCommand {
	args := []string{"postgres", "-D", fslayout.DataTarget, "-c", "cluster_name=" + silo.Name}
	keys := make([]string, 0, len(silo.PostgresSettings))
	for k := range silo.PostgresSettings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+silo.PostgresSettings[k])
	}
	args = append(args,
		"-c", "listen_addresses=",
		"-c", "unix_socket_directories="+fslayout.SocketTarget,
		"-c", "port=5432",
	)
	return &initCommand{Step: "postmaster", Path: inst.Postmaster(), Args: args, Env: siloEnv(inst), Dir: "/"}
}

// listedDatabases returns the explicitly listed databases (not "*").
func listedDatabases(dbs []string) []string {
	var out []string
	for _, d := range dbs {
		if d != config.CatchAll {
			out = append(out, d)
		}
	}
	return out
}

// prepareDirs creates the silo's host directories with the ownership its
// uid range needs. The silo directory is 0711: the silo's init (host uid
// id_base) must traverse it to bind data and run, but may not list it or
// read the password file next to them.
func prepareDirs(cfg *config.Config, paths config.SiloPaths, ids idSetup) error {
	// Both directories belong to silo-proxy: their mode is enforced, not
	// just set at creation.
	for _, d := range []string{filepath.Join(cfg.StateDir, "silos"), paths.Dir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(cfg.BaseRootDir, 0o755); err != nil {
		return fmt.Errorf("base_root_dir: %w", err)
	}
	if err := os.Mkdir(paths.Root, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("silo root: %w", err)
	}
	uid, gid := ids.hostID(fslayout.PostgresUID), ids.hostGID(fslayout.PostgresGID)
	if err := os.Mkdir(paths.Run, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := os.Chown(paths.Run, uid, gid); err != nil {
		return err
	}
	if err := os.Chmod(paths.Run, 0o700); err != nil {
		return err
	}
	if st, err := os.Stat(paths.Data); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != uid {
			return fmt.Errorf("data directory %s is owned by uid %d, but the silo's postgres user is host uid %d (was %s edited or the state_dir copied without its idmap?)", paths.Data, sys.Uid, uid, paths.IDMap)
		}
	}
	return nil
}

// UnreachableError reports a bind source the silo's init cannot reach:
// inside its user namespace it is the host uid id_base, without any
// capability over host files, so every directory above the source must be
// searchable by "others" (or owned by an id of the silo's range).
type UnreachableError struct {
	Source, Target, Origin string
	Dir                    string
	Mode                   fs.FileMode
	UID, GID               uint32
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("bind %s -> %s (%s): not reachable by the silo's uid range: directory %s is mode %04o (owner %d:%d); allow others to traverse it (chmod o+x %s) or bind a path that is",
		e.Source, e.Target, e.Origin, e.Dir, e.Mode.Perm(), e.UID, e.GID, e.Dir)
}

// checkReachable verifies, before anything starts, that every bind source
// of plan is reachable by the silo's ids, so the operator gets a message
// naming the directory instead of init's bare EACCES.
func checkReachable(plan fslayout.Plan, r IDRange) error {
	inRange := func(id uint32) bool { return id >= r.HostID && uint64(id) < r.end() }
	seen := map[string]bool{}
	for _, op := range plan.Ops {
		if op.Kind != fslayout.OpBind && op.Kind != fslayout.OpDev {
			continue
		}
		real, err := filepath.EvalSymlinks(op.Source)
		if err != nil {
			continue // missing sources are reported by init with the op
		}
		for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
			if !seen[dir] {
				seen[dir] = true
				var st unix.Stat_t
				if err := unix.Stat(dir, &st); err == nil {
					var ok bool
					switch {
					case inRange(st.Uid):
						ok = st.Mode&0o100 != 0
					case inRange(st.Gid):
						ok = st.Mode&0o010 != 0
					default:
						ok = st.Mode&0o001 != 0
					}
					if !ok {
						return &UnreachableError{Source: op.Source, Target: op.Target, Origin: op.Origin, Dir: dir,
							Mode: fs.FileMode(st.Mode & 0o7777), UID: st.Uid, GID: st.Gid}
					}
				}
			}
			if dir == "/" {
				break
			}
		}
	}
	return nil
}

// bootstrap initialises a new data directory: initdb runs in the silo's
// own kind of sandbox (same namespaces, uid 1000) on the bootstrap plan,
// which adds /bin/sh for initdb's popen() and a private tmpfs holding the
// password file, into <data>.bootstrap; only a complete result is renamed
// to data. A leftover .bootstrap directory is an interrupted earlier
// attempt and is removed first, so a half-initialised data directory can
// never be started.
func (l *hostLauncher) bootstrap(ctx context.Context, sb *sandbox, cg *cgroup) error {
	silo, log := sb.req.Silo, sb.req.Log
	inst, paths, ids, password := sb.inst, sb.paths, sb.ids, sb.password
	tmp := paths.Data + ".bootstrap"
	// A new data directory has none of the databases recorded for an old one.
	if err := os.Remove(filepath.Join(paths.Dir, "databases")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("removing the interrupted bootstrap %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	uid, gid := ids.hostID(fslayout.PostgresUID), ids.hostGID(fslayout.PostgresGID)
	if err := os.Chown(tmp, uid, gid); err != nil {
		return err
	}
	begin := time.Now()
	log.Info("bootstrapping a new data directory", "data", paths.Data)
	plan, err := l.plan(fslayout.Spec{
		Silo:      silo.Name,
		Layout:    silo.Layout,
		Install:   inst,
		DataDir:   tmp,
		SocketDir: paths.Run,
		Mounts:    silo.Mounts,
		Bootstrap: true,
	})
	if err != nil {
		return err
	}
	if !ids.rootless {
		if err := checkReachable(plan, ids.rng); err != nil {
			return err
		}
	}
	plan.Ops = append(plan.Ops[:len(plan.Ops):len(plan.Ops)],
		fslayout.MountOp{Kind: fslayout.OpTmpfs, Target: bootstrapSecretDir,
			Data:   fmt.Sprintf("mode=0700,uid=%d,gid=%d,size=64k", fslayout.PostgresUID, fslayout.PostgresGID),
			Flags:  fslayout.NoSuid | fslayout.NoDev | fslayout.NoExec,
			Origin: "bootstrap: password"},
		fslayout.MountOp{Kind: fslayout.OpFile, Target: bootstrapPwFile, Content: []byte(password + "\n"), Mode: 0o444,
			Origin: "bootstrap: password"},
	)
	ic := l.initConfig(silo, paths, plan, ids)
	ic.Commands = []initCommand{{
		Step: "initdb",
		Path: inst.Initdb(),
		Args: []string{"initdb",
			"-D", fslayout.DataTarget,
			"-U", fslayout.PostgresUser,
			"--pwfile=" + bootstrapPwFile,
			"--auth=scram-sha-256",
			"-E", "UTF8",
			"--locale=C",
			"--no-instructions",
		},
		Env: siloEnv(inst),
		Dir: "/",
	}}
	p, err := l.spawn(sb, ic, cg, false)
	if err != nil {
		return err
	}
	select {
	case <-p.done():
	case <-ctx.Done():
		p.kill()
		<-p.done()
		return ctx.Err()
	}
	if err := p.exitErr(); err != nil {
		return err
	}
	if !p.finished() {
		return errors.New("initdb sandbox exited without reporting completion")
	}
	hba := filepath.Join(tmp, "pg_hba.conf")
	if err := writeFileAtomic(hba, []byte(hbaConf), 0o600); err != nil {
		return err
	}
	if err := os.Chown(hba, uid, gid); err != nil {
		return err
	}
	if err := os.Rename(tmp, paths.Data); err != nil {
		return err
	}
	if err := syncDir(paths.Dir); err != nil {
		return err
	}
	log.Info("bootstrapped", "data", paths.Data, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// hostTimeZone names the host's time zone for initdb (which writes it into
// postgresql.conf) and the postmaster: $TZ, else the zone /etc/localtime
// links to, else UTC. Inside a silo /etc/localtime may not exist, so the
// name is resolved here on the host.
func hostTimeZone() string {
	if tz := os.Getenv("TZ"); tz != "" && !strings.ContainsAny(tz, "\n\x00") {
		return strings.TrimPrefix(tz, ":")
	}
	if link, err := os.Readlink("/etc/localtime"); err == nil {
		if _, zone, ok := strings.Cut(link, "zoneinfo/"); ok && zone != "" {
			return zone
		}
	}
	return "UTC"
}

// hostProcess is a silo started by hostLauncher: silo-init and, below it,
// the postmaster.
type hostProcess struct {
	name     string
	log      *slog.Logger
	cmd      *exec.Cmd
	lifeline *os.File
	tail     *logTail

	socketDir string
	password  string
	// dbMarker records the databases known to exist (see ensureDatabases).
	dbMarker string
	// readyHint is closed when the postmaster logs that it is ready, so
	// the readiness probe need not wait for its next poll.
	readyHint chan struct{}
	hintOnce  sync.Once
	// cg is the silo's cgroup, which the process owns: it removes it
	// after silo-init exits.
	cg *cgroup

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when a report arrives
	nsPid   int           // postmaster pid inside the silo, from "started"
	hostPid int
	// completed: the "done" report arrived (every command succeeded).
	completed bool
	failure   *InitError
	exitRep   *initReport
	err       error
	doneCh    chan struct{}
}

// spawn starts silo-init with the config ic and returns once it is in
// its cgroup cg (when not nil) and has the start byte: it builds the root
// meanwhile, and the postmaster and every backend are born inside the
// cgroup. own says the process owns cg and removes it once it has exited;
// a bootstrap's initdb leaves it to the start that follows. A postmaster
// then waits for run.
func (l *hostLauncher) spawn(sb *sandbox, ic *initConfig, cg *cgroup, own bool) (*hostProcess, error) {
	silo, log := sb.req.Silo, sb.req.Log
	msg, err := json.Marshal(ic)
	if err != nil {
		return nil, err
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return nil, err
	}
	logR, logW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		repR.Close()
		repW.Close()
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        l.exe,
		Args:        []string{"silo-proxy", InitArg, silo.Name},
		Env:         []string{envInitPipe + "=3", envReportPipe + "=4"},
		ExtraFiles:  []*os.File{cfgR, repW},
		Stdout:      logW,
		Stderr:      logW,
		SysProcAttr: sb.ids.sysProcAttr(silo.Network),
	}
	if ferr := l.onForker(func() { err = cmd.Start() }); ferr != nil {
		err = ferr
	}
	cfgR.Close()
	repW.Close()
	logW.Close()
	if err != nil {
		cfgW.Close()
		repR.Close()
		logR.Close()
		if own {
			if derr := cg.destroy(); derr != nil {
				log.Warn("removing the silo's cgroup", "err", derr.Error())
			}
		}
		return nil, fmt.Errorf("starting silo-init (%s): %w", l.exe, err)
	}
	p := &hostProcess{
		name:      silo.Name,
		log:       log,
		cmd:       cmd,
		lifeline:  cfgW,
		tail:      &logTail{},
		readyHint: make(chan struct{}),
		changed:   make(chan struct{}),
		doneCh:    make(chan struct{}),
	}
	if own {
		p.cg = cg
	}
	logDone := make(chan struct{})
	go p.readLog(logR, logDone)
	go p.monitor(repR, logDone)
	// init builds the root while the kernel moves it into the silo's
	// cgroup (milliseconds per cgroup v1 hierarchy), and starts no program
	// before the start byte says the move is done.
	if err := writeFrame(cfgW, msg); err != nil {
		return nil, p.fail(fmt.Errorf("sending the silo config to silo-init: %w", err))
	}
	if err := cg.addProcess(cmd.Process.Pid); err != nil {
		return nil, p.fail(err)
	}
	if _, err := cfgW.Write([]byte{startByte}); err != nil {
		return nil, p.fail(fmt.Errorf("starting silo-init: %w", err))
	}
	return p, nil
}

// run tells a postmaster's silo-init, parked or just spawned, to start the
// postmaster. It fails when init is gone.
func (p *hostProcess) run() error {
	select {
	case <-p.doneCh:
		if err := p.exitErr(); err != nil {
			return err
		}
		return errors.New("silo-init exited before starting the postmaster")
	default:
	}
	if _, err := p.lifeline.Write([]byte{runByte}); err != nil {
		return fmt.Errorf("starting the postmaster: %w", err)
	}
	return nil
}

// fail ends a silo-init that is no longer wanted after err, and returns
// the better explanation: each step of a start fails when init has already
// given up (it reports why, then exits: the cgroup move finds no such
// process, the pipe is broken), and init's own report is then the error
// worth returning.
func (p *hostProcess) fail(err error) error {
	p.kill()
	<-p.done()
	if ierr := p.exitErr(); ierr != nil && p.reported() {
		return ierr
	}
	return err
}

// monitor reads init's reports until the pipe closes, then reaps init and
// releases the silo's resources.
func (p *hostProcess) monitor(rep *os.File, logDone <-chan struct{}) {
	br := bufio.NewReaderSize(rep, 64<<10)
	for {
		line, err := readLine(br, maxInitMessage)
		if err != nil {
			break
		}
		r, err := decodeReport(line)
		if err != nil {
			p.log.Warn("unreadable report from silo-init", "err", err)
			continue
		}
		p.mu.Lock()
		switch r.Kind {
		case reportStarted:
			p.nsPid = r.Pid
		case reportDone:
			p.completed = true
		case reportError:
			p.failure = r.initError()
		case reportExited:
			rr := r
			p.exitRep = &rr
		}
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	rep.Close()
	waitErr := p.cmd.Wait()
	select {
	case <-logDone:
	case <-time.After(killGrace):
		// A process of the silo still holds the log pipe: it cannot
		// outlive the pid namespace for long, and the status is known.
	}
	p.lifeline.Close()
	p.mu.Lock()
	cg := p.cg
	p.mu.Unlock()
	if err := cg.destroy(); err != nil {
		p.log.Warn("removing the silo's cgroup", "err", err.Error())
	}
	p.mu.Lock()
	p.err = p.describeExit(waitErr)
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	close(p.doneCh)
}

// describeExit turns the reports and init's wait status into the silo's
// exit error; nil for a postmaster that exited 0, or a bootstrap that
// completed.
func (p *hostProcess) describeExit(waitErr error) error {
	if p.failure != nil {
		return p.withLog(p.failure)
	}
	if r := p.exitRep; r != nil {
		switch {
		case r.Signal != 0:
			return p.withLog(fmt.Errorf("postmaster killed by signal %s", syscall.Signal(r.Signal)))
		case r.Code != 0:
			return p.withLog(fmt.Errorf("postmaster exited with status %d", r.Code))
		}
		return nil
	}
	if p.completed && waitErr == nil {
		return nil
	}
	if waitErr == nil {
		return errors.New("silo-init exited without a report")
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return p.withLog(fmt.Errorf("silo-init killed by signal %s", ws.Signal()))
		}
	}
	return p.withLog(fmt.Errorf("silo-init: %w", waitErr))
}

// withLog adds the last error line the silo logged, the usual explanation
// of a postmaster or initdb that gave up.
func (p *hostProcess) withLog(err error) error {
	if line := p.tail.lastProblem(); line != "" {
		return &logError{Err: err, Line: line}
	}
	return err
}

// logError is an exit error with the postgres log line that explains it.
type logError struct {
	Err  error
	Line string
}

func (e *logError) Error() string { return e.Err.Error() + " (log: " + e.Line + ")" }
func (e *logError) Unwrap() error { return e.Err }

// waitStarted waits for the "started" report and finds the postmaster's
// host pid.
func (p *hostProcess) waitStarted(ctx context.Context) error {
	for {
		p.mu.Lock()
		ns, ch := p.nsPid, p.changed
		p.mu.Unlock()
		if ns != 0 {
			p.findHostPid()
			return nil
		}
		select {
		case <-ch:
		case <-p.doneCh:
			if err := p.exitErr(); err != nil {
				return err
			}
			return errors.New("silo-init exited before starting the postmaster")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// findHostPid reads silo-init's only child, the postmaster, from
// /proc/<init>/task/<init>/children.
func (p *hostProcess) findHostPid() {
	ipid := p.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", ipid, ipid))
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			p.mu.Lock()
			p.hostPid = pid
			p.mu.Unlock()
			return
		}
	}
}

// reported says whether init sent an error or exit report.
func (p *hostProcess) reported() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failure != nil || p.exitRep != nil
}

func (p *hostProcess) finished() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.completed
}

func (p *hostProcess) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hostPid
}

// shutdown signals silo-init, which forwards the signal to the postmaster
// (PID 1 of the silo would otherwise ignore it).
func (p *hostProcess) shutdown(mode StopMode) error {
	sig := syscall.SIGTERM
	switch mode {
	case StopFast:
		sig = syscall.SIGINT
	case StopImmediate:
		sig = syscall.SIGQUIT
	}
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

func (p *hostProcess) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
}

func (p *hostProcess) done() <-chan struct{} { return p.doneCh }

func (p *hostProcess) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *hostProcess) usage() (Usage, bool) {
	p.mu.Lock()
	cg := p.cg
	p.mu.Unlock()
	return cg.usage()
}

// ensureDatabases creates the missing databases of dbs. Databases it has
// made sure of are recorded in <silo dir>/databases (outside the silo's
// view) and not checked again, which keeps a connection and a SCRAM
// exchange out of every cold start; a listed database that a superuser
// later drops is therefore not recreated until the record is removed.
func (p *hostProcess) ensureDatabases(ctx context.Context, dbs []string) error {
	known := readDatabaseMarker(p.dbMarker)
	missing := false
	for _, d := range dbs {
		if !slices.Contains(known, d) {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	if err := ensureDatabases(ctx, p.socketDir, p.password, dbs, p.log); err != nil {
		return err
	}
	all := append(slices.Clone(known), dbs...)
	slices.Sort(all)
	b, err := json.Marshal(slices.Compact(all))
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.dbMarker, append(b, '\n'), 0o600); err != nil {
		p.log.Warn("recording the silo's databases", "err", err.Error())
	}
	return nil
}

// readDatabaseMarker returns the databases recorded in path; nothing when
// the file is missing or unreadable (then every database is checked).
func readDatabaseMarker(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var dbs []string
	if json.Unmarshal(b, &dbs) != nil {
		return nil
	}
	return dbs
}

// readLog logs every line silo-init and the postmaster write to stderr,
// at a level taken from the postgres severity, and keeps the last lines
// for error messages.
func (p *hostProcess) readLog(r *os.File, done chan<- struct{}) {
	defer close(done)
	defer r.Close()
	br := bufio.NewReaderSize(r, 16<<10)
	for {
		line, err := br.ReadString('\n')
		if line = strings.TrimRight(line, "\r\n"); line != "" {
			lvl, text := postgresLogLevel(line)
			p.tail.add(text)
			if strings.Contains(text, readyLogLine) {
				p.hintOnce.Do(func() { close(p.readyHint) })
			}
			p.log.Log(context.Background(), lvl, text, "source", "postgres")
		}
		if err != nil {
			if err != io.EOF {
				p.log.Debug("silo log pipe", "err", err)
			}
			return
		}
	}
}

// phaseTimer records how long each step of a start took, for the debug
// log that explains a slow cold start.
type phaseTimer struct {
	last  time.Time
	names []string
	took  []time.Duration
}

func newPhaseTimer() *phaseTimer { return &phaseTimer{last: time.Now()} }

func (p *phaseTimer) mark(name string) {
	now := time.Now()
	p.names = append(p.names, name)
	p.took = append(p.took, now.Sub(p.last))
	p.last = now
}

func (p *phaseTimer) attrs() []any {
	out := make([]any, 0, 2*len(p.names))
	for i, n := range p.names {
		out = append(out, n, p.took[i].Round(10*time.Microsecond))
	}
	return out
}
