package spawner

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The postmaster is PID 2 of its silo. Stage 2 of silo-init is a Go
// program: its runtime starts threads whenever it needs one (a preempted
// goroutine locked to its thread is enough), and a thread takes the next
// pid of the silo's pid namespace like any process. Writing ns_last_pid
// and then forking therefore only usually hands pid 2 to the postmaster:
// under load a runtime thread created in between takes it.
//
// clone3 with set_tid asks the kernel for pid 2 by number (it answers
// EEXIST if the pid is taken, so nothing else can get it by accident);
// it needs CAP_SYS_ADMIN in the user namespace owning the pid namespace,
// which silo-init holds. No fork wrapper of the standard library takes a
// set_tid, so forkExecPID2 forks by itself, the way syscall.ForkExec does:
// everything the child needs is prepared before the fork, and the child
// makes only raw system calls, from nosplit functions, until execve.

// cloneArgs is struct clone_args of <linux/sched.h> (CLONE_ARGS_SIZE_VER2).
type cloneArgs struct {
	flags      uint64
	pidfd      uint64
	childTID   uint64
	parentTID  uint64
	exitSignal uint64
	stack      uint64
	stackSize  uint64
	tls        uint64
	setTID     uint64
	setTIDSize uint64
	cgroup     uint64
}

// pid2Exec is a program to start as the silo's PID 2, in the form the
// child uses without allocating.
type pid2Exec struct {
	path *byte
	argv []*byte // NULL-terminated
	envv []*byte // NULL-terminated
	dir  *byte
	uid  uintptr
	gid  uintptr
	// setgroups clears the supplementary groups (not allowed in rootless
	// mode, where setgroups is denied).
	setgroups bool
	// filter, when not nil, is the seccomp filter the child installs for
	// itself just before execve; init installs its own afterwards.
	filter *unix.SockFprog
	// mask is the signal mask the child restores before execve.
	mask uint64
}

// errNoSetTID: clone3 with set_tid is not available (a kernel before 5.5,
// a missing capability, or pid 2 taken); the caller falls back to a plain
// fork, whose pid is whatever comes next.
var errNoSetTID = errors.New("clone3 set_tid unavailable")

// newPID2Exec prepares c for forkExecPID2.
func newPID2Exec(c initCommand, uid, gid int, setgroups bool, filter *unix.SockFprog) (*pid2Exec, error) {
	e := &pid2Exec{uid: uintptr(uid), gid: uintptr(gid), setgroups: setgroups, filter: filter}
	var err error
	if e.path, err = syscall.BytePtrFromString(c.Path); err != nil {
		return nil, err
	}
	if e.dir, err = syscall.BytePtrFromString(c.Dir); err != nil {
		return nil, err
	}
	if e.argv, err = syscall.SlicePtrFromStrings(c.Args); err != nil {
		return nil, err
	}
	if e.envv, err = syscall.SlicePtrFromStrings(c.Env); err != nil {
		return nil, err
	}
	return e, nil
}

// forkExecPID starts e as process pid of the caller's pid namespace (the
// silo's postmaster: 2) and returns once the child has called execve, or
// failed to. With errNoSetTID nothing was started. The caller must be on a
// locked OS thread that holds no_new_privs when e has a filter (the child
// inherits it, and needs it to install the filter).
func forkExecPID(e *pid2Exec, pid int) (int, error) {
	// The child reports a failure before execve as an errno on this pipe;
	// a successful execve closes it (O_CLOEXEC), and the parent reads EOF.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	tid := int32(pid)
	args := &cloneArgs{
		// Signal handlers are Go's until execve: reset them to the
		// default in the child (ignored signals stay ignored).
		flags:      unix.CLONE_CLEAR_SIGHAND,
		exitSignal: uint64(unix.SIGCHLD),
		setTID:     uint64(uintptr(unsafe.Pointer(&tid))),
		setTIDSize: 1,
	}
	syscall.ForkLock.Lock()
	child, errno := pid2Fork(args, e, p[1])
	syscall.ForkLock.Unlock()
	unix.Close(p[1])
	runtime.KeepAlive(args)
	runtime.KeepAlive(&tid)
	runtime.KeepAlive(e)
	if errno != 0 {
		switch errno {
		case unix.ENOSYS, unix.EPERM, unix.EEXIST, unix.EINVAL, unix.E2BIG:
			return 0, fmt.Errorf("%w: %w", errNoSetTID, errno)
		}
		return 0, os.NewSyscallError("clone3", errno)
	}
	var buf [8]byte
	n, err := readFull(p[0], buf[:])
	if err != nil || n < len(buf) {
		// EOF: execve succeeded.
		return child, nil
	}
	// The child failed before execve and exits; reap it here, the
	// supervisor never hears of it.
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(child, &ws, 0, nil); !errors.Is(err, unix.EINTR) {
			break
		}
	}
	report := *(*uint64)(unsafe.Pointer(&buf[0]))
	step := "fork"
	if i := report >> 32; i < uint64(len(pid2Steps)) {
		step = pid2Steps[i]
	}
	return 0, fmt.Errorf("%s: %w", step, syscall.Errno(uint32(report)))
}

// pid2Steps names the child's steps for the error a failed one reports.
var pid2Steps = [...]string{"fork", "restoring the signal mask", "setgroups", "setgid", "setuid", "seccomp", "chdir", "dup3", "execve"}

const (
	pid2StepMask = iota + 1
	pid2StepSetgroups
	pid2StepSetgid
	pid2StepSetuid
	pid2StepSeccomp
	pid2StepChdir
	pid2StepDup
	pid2StepExec
)

// readFull reads into b until it is full or EOF; it returns how much it
// read.
func readFull(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// pid2Fork blocks every signal, forks with clone3 and, in the child, runs
// pid2Child, which never returns. In the parent it restores the signal
// mask and returns the child's pid.
//
// It must not allocate or grow the stack between the fork and execve: the
// child is a copy of a multi-threaded Go process with one thread left, in
// which the scheduler, the collector and the allocator must never run.
// Hence nosplit, raw system calls only, and every argument prepared.
//
//go:nosplit
//go:norace
func pid2Fork(args *cloneArgs, e *pid2Exec, errFD int) (int, syscall.Errno) {
	all := ^uint64(0)
	var old uint64
	// Signals stay blocked across the fork so that none runs a Go handler
	// in the child before CLONE_CLEAR_SIGHAND's reset applies.
	if _, _, errno := syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&all)), uintptr(unsafe.Pointer(&old)), 8, 0, 0); errno != 0 {
		return 0, errno
	}
	e.mask = old
	pid, _, errno := syscall.RawSyscall6(unix.SYS_CLONE3, uintptr(unsafe.Pointer(args)), unsafe.Sizeof(*args), 0, 0, 0, 0)
	if errno == 0 && pid == 0 {
		pid2Child(e, errFD)
	}
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	return int(pid), errno
}

// pid2Child is the child of pid2Fork: it becomes the silo's postgres user,
// installs the seccomp filter, and executes e. A failed step writes its
// number and errno to errFD and exits.
//
//go:nosplit
//go:norace
func pid2Child(e *pid2Exec, errFD int) {
	var step uint64
	var errno syscall.Errno
	if _, _, errno = syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK,
		uintptr(unsafe.Pointer(&e.mask)), 0, 8, 0, 0); errno != 0 {
		step = pid2StepMask
		goto fail
	}
	if e.setgroups {
		if _, _, errno = syscall.RawSyscall6(sysSetgroups, 0, 0, 0, 0, 0, 0); errno != 0 {
			step = pid2StepSetgroups
			goto fail
		}
	}
	if _, _, errno = syscall.RawSyscall6(sysSetgid, e.gid, 0, 0, 0, 0, 0); errno != 0 {
		step = pid2StepSetgid
		goto fail
	}
	if _, _, errno = syscall.RawSyscall6(sysSetuid, e.uid, 0, 0, 0, 0, 0); errno != 0 {
		step = pid2StepSetuid
		goto fail
	}
	if e.filter != nil {
		if _, _, errno = syscall.RawSyscall6(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0,
			uintptr(unsafe.Pointer(e.filter)), 0, 0, 0); errno != 0 {
			step = pid2StepSeccomp
			goto fail
		}
	}
	if _, _, errno = syscall.RawSyscall6(unix.SYS_CHDIR, uintptr(unsafe.Pointer(e.dir)), 0, 0, 0, 0, 0); errno != 0 {
		step = pid2StepChdir
		goto fail
	}
	// stdin stays; stdout goes where stderr goes (the proxy's log pipe).
	if _, _, errno = syscall.RawSyscall6(unix.SYS_DUP3, 2, 1, 0, 0, 0, 0); errno != 0 {
		step = pid2StepDup
		goto fail
	}
	_, _, errno = syscall.RawSyscall6(unix.SYS_EXECVE, uintptr(unsafe.Pointer(e.path)),
		uintptr(unsafe.Pointer(unsafe.SliceData(e.argv))), uintptr(unsafe.Pointer(unsafe.SliceData(e.envv))), 0, 0, 0)
	step = pid2StepExec
fail:
	report := step<<32 | uint64(errno)
	syscall.RawSyscall6(unix.SYS_WRITE, uintptr(errFD), uintptr(unsafe.Pointer(&report)), 8, 0, 0, 0)
	for {
		syscall.RawSyscall6(unix.SYS_EXIT_GROUP, 253, 0, 0, 0, 0, 0)
	}
}
