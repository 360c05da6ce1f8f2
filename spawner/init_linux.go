package spawner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

// InitMain is silo-init: PID 1 of a silo. It reads its config from the
// pipe named by _SILO_INITPIPE, builds the silo's root from the mount plan
// and pivots into it, sets the hostname and brings up lo. To start the
// postmaster as PID 2 it then re-executes itself once inside the new root
// (stage 2, see execStage2), waits for the proxy's start byte (it is in the
// silo's cgroup), drops privileges and prepares the postmaster's start,
// then waits for the run byte (a parked silo waits there) and starts the
// postmaster as the silo's postgres uid, under the seccomp filter. It
// stays PID 1: it reaps zombies, forwards SIGTERM,
// SIGINT, SIGQUIT and SIGHUP to the postmaster and exits with the
// postmaster's status. When the config pipe reaches EOF (the proxy closed
// it or died) it exits at once, and the kernel kills every process of the
// silo with it. For a bootstrap (commands, no postmaster) it runs the
// commands in stage 1 and exits.
//
// Every failure is reported on the report pipe (_SILO_INITREPORT) with the
// failing step, paths and errno before init exits non-zero.
//
// InitMain never returns. It must be called from an init function with the
// OS thread locked (runtime.LockOSThread), so that the mount, capability
// and no_new_privs state it sets up stays on the thread that later forks
// the postmaster.
func InitMain() {
	rep := reportWriter(os.Getenv(envReportPipe))
	os.Exit(runInit(rep))
}

// reporter sends reports to the proxy; it falls back to stderr (which the
// proxy logs line by line) when the report pipe is missing or broken.
type reporter struct{ w io.Writer }

func reportWriter(fdText string) *reporter {
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		return &reporter{w: os.Stderr}
	}
	syscall.CloseOnExec(fd)
	return &reporter{w: os.NewFile(uintptr(fd), "silo-init-report")}
}

func (r *reporter) send(m initReport) {
	if _, err := r.w.Write(encodeReport(m)); err != nil && r.w != os.Stderr {
		fmt.Fprintf(os.Stderr, "silo-init: %s\n", encodeReport(m))
	}
}

func (r *reporter) fail(step string, err error) int {
	r.send(errorReport(step, err))
	return 1
}

func runInit(rep *reporter) int {
	if os.Getenv(envInitStage2) != "" {
		return runStage2(rep)
	}
	fd, err := strconv.Atoi(os.Getenv(envInitPipe))
	if err != nil || fd < 3 {
		return rep.fail("config", fmt.Errorf("%s is not set to an inherited descriptor", envInitPipe))
	}
	syscall.CloseOnExec(fd)
	os.Unsetenv(envInitPipe)
	os.Unsetenv(envReportPipe)
	pipe := os.NewFile(uintptr(fd), "silo-init-config")
	msg, err := readFrame(pipe, maxInitMessage)
	if err != nil {
		return rep.fail("config", fmt.Errorf("reading the config pipe: %w", err))
	}
	cfg, err := decodeInitConfig(msg)
	if err != nil {
		return rep.fail("config", err)
	}

	unix.Umask(0o022)
	if err := fslayout.Apply(cfg.Plan, cfg.Root); err != nil {
		return rep.fail("mount", err)
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return rep.fail("sethostname", &fslayout.MountError{Op: "sethostname", Target: cfg.Hostname, Err: err})
	}
	if cfg.Loopback {
		if err := loopbackUp(); err != nil {
			return rep.fail("loopback", err)
		}
	}
	if cfg.Postmaster != nil {
		// Stage 2 takes over with the same pipes; exec only returns on
		// failure.
		err := execStage2(cfg, fd, rep)
		return rep.fail("exec", err)
	}

	sigs := notifySignals()
	if err := awaitByte(pipe, startByte); err != nil {
		return 137
	}
	// The proxy holds the write end for as long as it wants the silo to
	// live. EOF means it closed it, or died without Pdeathsig reaching us.
	lifeline := watchLifeline(pipe)
	if err := confine(cfg); err != nil {
		return rep.fail("confine", err)
	}
	sup := &supervisor{sigs: sigs, lifeline: lifeline}
	if code, ok := runCommands(cfg, sup, rep); !ok {
		return code
	}
	rep.send(initReport{Kind: reportDone})
	return 0
}

// envInitStage2 names the memfd holding stage 2's config (see execStage2).
const envInitStage2 = "_SILO_INITSTAGE2"

// nsLastPid is the pid namespace's last allocated pid (proc(5)); writing it
// needs CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE) in the user namespace
// owning the pid namespace, which silo-init holds.
const nsLastPid = "/proc/sys/kernel/ns_last_pid"

// execStage2 re-executes silo-init inside the finished root so that the
// postmaster can be PID 2. The Go runtime of stage 1 created its threads
// (sysmon, GC workers...) before any of our code ran, and thread ids come
// from the same pid space: they hold pids 2, 3, ... for as long as the
// process lives. execve ends every thread but the caller's and frees those
// pids. Setting ns_last_pid to 2 first makes stage 2's own runtime
// threads start at 3, which leaves 2 for the postmaster.
//
// Stage 2 keeps the config pipe (the lifeline) and the report pipe, and
// reads its config, the plan stripped, from a memfd.
func execStage2(cfg *initConfig, lifelineFD int, rep *reporter) error {
	st := *cfg
	st.Plan = fslayout.Plan{}
	b, err := json.Marshal(&st)
	if err != nil {
		return err
	}
	mfd, err := unix.MemfdCreate("silo-init-stage2", 0)
	if err != nil {
		return &os.SyscallError{Syscall: "memfd_create", Err: err}
	}
	f := os.NewFile(uintptr(mfd), "silo-init-stage2")
	if _, err := f.Write(b); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	reportFD := -1
	if rf, ok := rep.w.(*os.File); ok && rf != os.Stderr {
		reportFD = int(rf.Fd())
	}
	for _, fd := range []int{lifelineFD, reportFD, mfd} {
		if fd < 0 {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return &os.SyscallError{Syscall: "fcntl(F_SETFD)", Err: err}
		}
	}
	// Best effort: without it the postmaster gets some other low pid.
	os.WriteFile(nsLastPid, []byte("2"), 0)
	env := []string{
		envInitStage2 + "=" + strconv.Itoa(mfd),
		envInitPipe + "=" + strconv.Itoa(lifelineFD),
		envReportPipe + "=" + strconv.Itoa(reportFD),
	}
	err = unix.Exec("/proc/self/exe", []string{os.Args[0], InitArg, cfg.Silo}, env)
	return &os.SyscallError{Syscall: "execve(/proc/self/exe)", Err: err}
}

// runStage2 is silo-init after execStage2, inside the silo's root: it
// drops privileges, waits for the run byte, starts the postmaster as PID 2
// and supervises it.
func runStage2(rep *reporter) int {
	mfd, err := strconv.Atoi(os.Getenv(envInitStage2))
	if err != nil || mfd < 3 {
		return rep.fail("config", fmt.Errorf("%s is not set to an inherited descriptor", envInitStage2))
	}
	lfd, err := strconv.Atoi(os.Getenv(envInitPipe))
	if err != nil || lfd < 3 {
		return rep.fail("config", fmt.Errorf("%s is not set to an inherited descriptor", envInitPipe))
	}
	for _, e := range []string{envInitStage2, envInitPipe, envReportPipe} {
		os.Unsetenv(e)
	}
	syscall.CloseOnExec(lfd)
	mf := os.NewFile(uintptr(mfd), "silo-init-stage2")
	b, err := io.ReadAll(io.LimitReader(mf, maxInitMessage+1))
	mf.Close()
	if err != nil {
		return rep.fail("config", err)
	}
	cfg, err := decodeInitConfig(b)
	if err != nil {
		return rep.fail("config", err)
	}
	sigs := notifySignals()
	lpipe := os.NewFile(uintptr(lfd), "silo-init-lifeline")
	if err := awaitByte(lpipe, startByte); err != nil {
		return 137
	}
	pm, err := preparePostmaster(cfg)
	if err != nil {
		return rep.fail("confine", err)
	}
	// Parked: everything is done but the postmaster's start, which the
	// proxy asks for when a client needs the silo.
	if err := awaitByte(lpipe, runByte); err != nil {
		return 137
	}
	lifeline := make(chan struct{})
	sup := &supervisor{sigs: sigs, lifeline: lifeline}
	pid, err := pm.start()
	if err != nil {
		return rep.fail(cfg.Postmaster.Step, err)
	}
	// Only now: a goroutine blocked in read(2) may make the runtime start
	// another thread, which must not take pid 2 first.
	go func() {
		io.Copy(io.Discard, lpipe)
		close(lifeline)
	}()
	rep.send(initReport{Kind: reportStarted, Pid: pid})
	ws, killed := sup.wait(pid)
	if killed {
		return 137
	}
	m := initReport{Kind: reportExited}
	code := 0
	switch {
	case ws.Exited():
		m.Code = ws.ExitStatus()
		code = m.Code
	case ws.Signaled():
		m.Signal = int(ws.Signal())
		code = 128 + m.Signal
	}
	rep.send(m)
	return code
}

// postmasterStart is the postmaster's start, prepared by stage 2 while it
// is parked.
type postmasterStart struct {
	cfg    *initConfig
	filter *unix.SockFprog // nil for seccomp: off
	exec   *pid2Exec
}

// preparePostmaster drops init's privileges (applyPrivileges, on the
// locked thread that will fork the postmaster), assembles the seccomp
// filter and prepares the postmaster's exec, so that start only forks.
func preparePostmaster(cfg *initConfig) (*postmasterStart, error) {
	if err := applyPrivileges(privilegeSpec{}); err != nil {
		return nil, err
	}
	filter, err := seccompFilter(cfg.Seccomp)
	if err != nil {
		return nil, err
	}
	e, err := newPID2Exec(*cfg.Postmaster, cfg.UID, cfg.GID, cfg.SetGroups, filter)
	if err != nil {
		return nil, err
	}
	return &postmasterStart{cfg: cfg, filter: filter, exec: e}, nil
}

// start starts the postmaster as pid 2 of the silo. execStage2's execve
// ended stage 1's threads, but the kernel releases their pids a moment
// later: it waits until thread 2 of init is gone (tgkill answers ESRCH),
// then has clone3 hand pid 2 to the postmaster (forkExecPID), which
// installs the silo's seccomp filter for itself just before its execve;
// init installs the same filter on itself right after. Where clone3
// cannot set the pid (before Linux 5.5), init installs its filter first
// and forks with ns_last_pid set to 1, which usually, not always, yields
// pid 2: nothing depends on the number.
func (pm *postmasterStart) start() (int, error) {
	deadline := time.Now().Add(time.Second)
	for unix.Tgkill(1, 2, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Microsecond)
	}
	pid, err := forkExecPID(pm.exec, 2)
	switch {
	case err == nil:
		if pm.filter != nil {
			if err := loadSeccomp(pm.cfg.Seccomp, pm.filter); err != nil {
				unix.Kill(pid, unix.SIGKILL)
				return 0, err
			}
		}
		return pid, nil
	case !errors.Is(err, errNoSetTID):
		return 0, &os.PathError{Op: "exec", Path: pm.cfg.Postmaster.Path, Err: err}
	}
	if pm.filter != nil {
		if err := loadSeccomp(pm.cfg.Seccomp, pm.filter); err != nil {
			return 0, err
		}
	}
	gc := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(gc)
	os.WriteFile(nsLastPid, []byte("1"), 0)
	return startCommand(pm.cfg, *pm.cfg.Postmaster)
}

// watchLifeline returns a channel closed when r reaches EOF.
func watchLifeline(r io.Reader) chan struct{} {
	lifeline := make(chan struct{})
	go func() {
		io.Copy(io.Discard, r)
		close(lifeline)
	}()
	return lifeline
}

// notifySignals subscribes to the signals init handles. Subscribe before
// anything is started, so no SIGCHLD is missed. As PID 1 of a pid
// namespace, init receives from its parent namespace only the signals it
// has handlers for: these.
func notifySignals() chan os.Signal {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGHUP, unix.SIGCHLD)
	return sigs
}

// runCommands runs cfg.Commands one after the other. ok is false when one
// failed or the silo is being torn down; code is then init's exit status.
func runCommands(cfg *initConfig, sup *supervisor, rep *reporter) (code int, ok bool) {
	for _, c := range cfg.Commands {
		pid, err := startCommand(cfg, c)
		if err != nil {
			return rep.fail(c.Step, err), false
		}
		ws, killed := sup.wait(pid)
		if killed {
			return 137, false
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return rep.fail(c.Step, fmt.Errorf("%s %s", c.Args[0], describeWait(ws))), false
		}
	}
	return 0, true
}

// awaitByte blocks until the proxy sends want on the config pipe:
// startByte once silo-init is in the silo's cgroup and may start programs,
// runByte once the postmaster is to start. EOF (the proxy gave up or died)
// or any other byte is an error, and init exits.
func awaitByte(r io.Reader, want byte) error {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	if b[0] != want {
		return fmt.Errorf("unexpected byte %#x on the config pipe, want %#x", b[0], want)
	}
	return nil
}

// confine is the last step before the silo's own programs start, on the
// locked thread that will fork them: drop every capability a child could
// inherit or regain (in rootless mode init's capabilities are ambient
// ones of the very uid the postmaster runs as, and an exec would hand
// them down), set no_new_privs and RLIMIT_CORE, then install the seccomp
// filter on every thread. init keeps its own effective capabilities,
// which it needs only to signal the postmaster.
func confine(cfg *initConfig) error {
	if err := applyPrivileges(privilegeSpec{}); err != nil {
		return err
	}
	return installSeccomp(cfg.Seccomp)
}

// startCommand starts c as the silo's postgres user with init's stdin and
// stderr (both pipes from the proxy's point of view) and returns its pid.
// It forks with syscall.ForkExec rather than os.StartProcess: the latter's
// first call forks a throwaway child to probe clone(CLONE_PIDFD), which
// would take the pid postmasterStart.start reserved with ns_last_pid.
// Children are never waited for through os.Process: init's own reaper
// collects every exit, including those of orphans reparented to it.
func startCommand(cfg *initConfig, c initCommand) (int, error) {
	attr := &syscall.ProcAttr{
		Dir:   c.Dir,
		Env:   c.Env,
		Files: []uintptr{0, 2, 2},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{
				Uid: uint32(cfg.UID),
				Gid: uint32(cfg.GID),
				// With setgroups "deny" (rootless), setgroups(2)
				// fails with EPERM, so leave the groups alone.
				NoSetGroups: !cfg.SetGroups,
			},
		},
	}
	pid, err := syscall.ForkExec(c.Path, c.Args, attr)
	if err != nil {
		return 0, &os.PathError{Op: "exec", Path: c.Path, Err: err}
	}
	return pid, nil
}

// supervisor is init's PID 1 loop: it reaps, forwards signals and watches
// the lifeline.
type supervisor struct {
	sigs     chan os.Signal
	lifeline chan struct{}
}

// wait blocks until pid exits and returns its status. killed is true when
// the lifeline broke first: the silo is then torn down and init must exit.
func (s *supervisor) wait(pid int) (ws unix.WaitStatus, killed bool) {
	for {
		if ws, ok := s.reap(pid); ok {
			return ws, false
		}
		select {
		case sig := <-s.sigs:
			if sig == unix.SIGCHLD {
				continue
			}
			unix.Kill(pid, sig.(syscall.Signal))
		case <-s.lifeline:
			// Kill everything in the namespace (init itself is immune),
			// then leave; the kernel finishes the job when PID 1 exits.
			unix.Kill(-1, unix.SIGKILL)
			return 0, true
		}
	}
}

// reap collects every exited child without blocking and reports whether
// pid was among them. Commands run one at a time, so any other child
// reaped here is an orphan reparented to PID 1, collected and forgotten.
func (s *supervisor) reap(pid int) (unix.WaitStatus, bool) {
	var found unix.WaitStatus
	ok := false
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || got <= 0 {
			return found, ok
		}
		if got == pid {
			found, ok = ws, true
		}
	}
}

func describeWait(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return "exited with status " + strconv.Itoa(ws.ExitStatus())
	case ws.Signaled():
		return "killed by signal " + ws.Signal().String()
	}
	return "ended with wait status " + strconv.Itoa(int(ws))
}

// errorReport turns an error inside silo-init into a report. A
// *fslayout.MountError contributes its op, paths, origin and flags; any
// errno in the chain is carried as a number.
func errorReport(step string, err error) initReport {
	r := initReport{Kind: reportError, Step: step, Message: err.Error()}
	var me *fslayout.MountError
	if errors.As(err, &me) {
		r.Step = me.Op
		r.Source = me.Source
		r.Target = me.Target
		r.Origin = me.Origin
		if me.Flags != 0 {
			r.Flags = fslayout.MountFlags(me.Flags)
		}
		if me.Err != nil {
			r.Message = me.Err.Error()
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && int(errno) <= maxErrno {
		r.Errno = int(errno)
	}
	return r
}
