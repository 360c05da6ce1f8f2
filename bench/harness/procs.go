package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a process the harness started. Every one is registered so that
// an interrupted run still stops what it started, by pid and nothing else.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// procSpec describes a process to start.
type procSpec struct {
	name string
	argv []string
	env  []string // added to the harness's environment
	dir  string
	log  string // stdout and stderr go here
	// cred runs the process as another user: the postmaster refuses to
	// run as root, and PgBouncer must reach the silo's socket directory,
	// which only the silo's postgres uid may enter.
	cred *syscall.Credential
}

// start starts spec in its own process group, so that a ^C at the
// terminal reaches only the harness, which then stops its children in
// order (PgBouncer before the postmaster it holds sessions on).
func start(spec procSpec) (*proc, error) {
	f, err := os.OpenFile(spec.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(spec.argv[0], spec.argv[1:]...)
	cmd.Env = append(os.Environ(), spec.env...)
	cmd.Dir = spec.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: spec.cred}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	p := &proc{name: spec.name, cmd: cmd, log: spec.log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process (its pid only) and waits up to grace for
// it to exit, then kills it.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	defer unregister(p)
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	fmt.Fprintf(os.Stderr, "silo-bench: %s (pid %d) did not stop in %s; killing it\n", p.name, p.pid(), grace)
	p.cmd.Process.Kill()
	<-p.done
}

func unregister(p *proc) {
	procsMu.Lock()
	defer procsMu.Unlock()
	for i, q := range procs {
		if q == p {
			procs = append(procs[:i], procs[i+1:]...)
			return
		}
	}
}

// stopAll stops every registered process, the most recent first.
func stopAll() {
	procsMu.Lock()
	list := append([]*proc(nil), procs...)
	procsMu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop(syscall.SIGTERM, 60*time.Second)
	}
}

// logTail returns the last lines of a process's log, for error messages.
func logTail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// freePort returns a TCP port on loopback that nothing listens on now.
// Other programs on the machine (the demo, test suites) use fixed ports,
// so the harness never does.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls cond every interval until it succeeds or timeout passes.
func waitFor(what string, timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		time.Sleep(interval)
	}
}

// procStatus reads the fields of /proc/PID/status the harness reports, in
// KiB for sizes.
type procStatus struct {
	VmRSS, RssAnon, RssFile, Threads int64
}

func readProcStatus(pid int) (procStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procStatus{}, err
	}
	var st procStatus
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			st.VmRSS = n
		case "RssAnon":
			st.RssAnon = n
		case "RssFile":
			st.RssFile = n
		case "Threads":
			st.Threads = n
		}
	}
	if st.VmRSS == 0 {
		return st, errors.New("no VmRSS in /proc status")
	}
	return st, nil
}

// countFDs returns the number of open descriptors of pid.
func countFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// cpuTime returns the CPU time pid has used so far, summed over its
// threads from /proc/PID/task/*/schedstat (nanoseconds, unlike the
// 10 ms ticks of /proc/PID/stat). Threads that exited are not counted;
// the Go runtime and PgBouncer keep theirs.
func cpuTime(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		total += n
	}
	return time.Duration(total), nil
}
