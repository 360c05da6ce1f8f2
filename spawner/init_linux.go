package spawner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

// InitMain is silo-init: PID 1 of a silo. It reads its config from the
// pipe named by _SILO_INITPIPE, builds the silo's root from the mount plan
// and pivots into it, sets the hostname, starts the configured commands
// and the postmaster as the silo's postgres uid, and then stays PID 1:
// it reaps zombies, forwards SIGTERM, SIGINT, SIGQUIT and SIGHUP to the
// postmaster and exits with the postmaster's status. When the config pipe
// reaches EOF (the proxy closed it or died) it exits at once, and the
// kernel kills every process of the silo with it.
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
	fd, err := strconv.Atoi(os.Getenv(envInitPipe))
	if err != nil || fd < 3 {
		return rep.fail("config", fmt.Errorf("%s is not set to an inherited descriptor", envInitPipe))
	}
	syscall.CloseOnExec(fd)
	os.Unsetenv(envInitPipe)
	os.Unsetenv(envReportPipe)
	pipe := os.NewFile(uintptr(fd), "silo-init-config")
	br := bufio.NewReaderSize(pipe, 64<<10)
	line, err := readLine(br, maxInitMessage)
	if err != nil {
		return rep.fail("config", fmt.Errorf("reading the config pipe: %w", err))
	}
	cfg, err := decodeInitConfig(line)
	if err != nil {
		return rep.fail("config", err)
	}

	// The proxy holds the write end for as long as it wants the silo to
	// live. EOF means it closed it, or died without Pdeathsig reaching us.
	lifeline := make(chan struct{})
	go func() {
		io.Copy(io.Discard, br)
		close(lifeline)
	}()

	// Notify before anything is started, so no SIGCHLD is missed. As PID 1
	// of a pid namespace, init receives from its parent namespace only the
	// signals it has handlers for: these.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGHUP, unix.SIGCHLD)

	unix.Umask(0o022)
	if err := fslayout.Apply(cfg.Plan, cfg.Root); err != nil {
		return rep.fail("mount", err)
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return rep.fail("sethostname", &fslayout.MountError{Op: "sethostname", Target: cfg.Hostname, Err: err})
	}
	if err := confine(cfg); err != nil {
		return rep.fail("confine", err)
	}

	sup := &supervisor{sigs: sigs, lifeline: lifeline}
	for _, c := range cfg.Commands {
		pid, err := startCommand(cfg, c)
		if err != nil {
			return rep.fail(c.Step, err)
		}
		ws, killed := sup.wait(pid)
		if killed {
			return 137
		}
		if !ws.Exited() || ws.ExitStatus() != 0 {
			return rep.fail(c.Step, fmt.Errorf("%s %s", c.Args[0], describeWait(ws)))
		}
	}
	if cfg.Postmaster == nil {
		rep.send(initReport{Kind: reportDone})
		return 0
	}
	pid, err := startCommand(cfg, *cfg.Postmaster)
	if err != nil {
		return rep.fail(cfg.Postmaster.Step, err)
	}
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

// readLine reads one newline-terminated line of at most limit bytes.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("line exceeds %d bytes", limit)
		}
		if err == nil {
			return line, nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
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
// Children are never waited for through os.Process: init's own reaper
// collects every exit, including those of orphans reparented to it.
func startCommand(cfg *initConfig, c initCommand) (int, error) {
	attr := &os.ProcAttr{
		Dir:   c.Dir,
		Env:   c.Env,
		Files: []*os.File{os.Stdin, os.Stderr, os.Stderr},
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
	p, err := os.StartProcess(c.Path, c.Args, attr)
	if err != nil {
		return 0, err
	}
	pid := p.Pid
	p.Release()
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
