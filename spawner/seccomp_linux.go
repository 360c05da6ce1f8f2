package spawner

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/config"
)

// seccompDenied is the default filter: syscalls a PostgreSQL server and the
// programs COPY … PROGRAM runs never need, grouped by what they would give
// an attacker who controls a backend. Everything else is allowed: the filter
// narrows the kernel surface and backs up the namespaces; it is not the
// primary boundary (an allow-list precise enough to be that would break
// extensions).
//
// A name missing from the running architecture's table is skipped only if
// it is listed in seccompArchSpecific; any other unknown name is a bug.
var seccompDenied = []struct {
	why   string
	names []string
}{
	{"reshaping the filesystem view or escaping the silo's root", []string{
		"mount", "umount2", "pivot_root", "chroot",
		"fsopen", "fsmount", "fsconfig", "fspick", "move_mount",
		"open_tree", "open_tree_attr", "mount_setattr",
	}},
	{"new or foreign namespaces (clone's namespace flags are filtered separately)", []string{
		"unshare", "setns",
	}},
	{"inspecting or steering other processes", []string{
		"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise",
		"pidfd_getfd", "kcmp",
	}},
	{"loading code into, or probing, the kernel", []string{
		"bpf", "perf_event_open", "init_module", "finit_module", "delete_module",
		"create_module", "get_kernel_syms", "query_module",
		"kexec_load", "kexec_file_load", "lookup_dcookie", "_sysctl",
		"io_uring_setup", "io_uring_enter", "io_uring_register",
		"userfaultfd", "modify_ldt", "uselib", "nfsservctl",
	}},
	{"the kernel keyring, shared by every silo of a host uid", []string{
		"keyctl", "add_key", "request_key",
	}},
	{"filesystem handles that bypass path-based confinement", []string{
		"open_by_handle_at", "name_to_handle_at", "fanotify_init",
	}},
	{"host-wide state: time, swap, power, accounting, quotas, console, I/O ports", []string{
		"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
		"swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd",
		"syslog", "vhangup", "iopl", "ioperm", "sethostname", "setdomainname",
	}},
}

// seccompArchSpecific names the denied syscalls that exist only on some
// architectures (x86 I/O ports and LDT, obsolete module calls).
var seccompArchSpecific = map[string]bool{
	"create_module": true, "get_kernel_syms": true, "query_module": true,
	"iopl": true, "ioperm": true, "modify_ldt": true, "uselib": true, "_sysctl": true,
}

// seccompCloneNamespaces are the clone(2) flags that create namespaces. A
// silo already has its own namespaces; creating more (above all a user
// namespace, which hands out a full capability set inside it) is the usual
// first step of a kernel exploit. CLONE_NEWTIME is absent: for clone(2) that
// bit is part of the exit-signal byte and cannot be filtered.
const seccompCloneNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// Filter return values beyond the library's plain EPERM.
const (
	seccompRetENOSYS = uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.ENOSYS)
	seccompRetEPERM  = uint32(unix.SECCOMP_RET_ERRNO) | uint32(unix.EPERM)
)

// seccompPolicy builds the filter policy of mode for the architecture info.
//
// clone3 passes its flags in memory a filter cannot read, so it answers
// ENOSYS: glibc (and Go, which uses clone3 only for cgroup fds and time
// namespaces) then falls back to clone(2), whose flags are filtered. Docker
// and systemd do the same. It answers ENOSYS in log mode too: the fallback
// is invisible to programs, and it routes namespace creation through clone,
// where log mode records it, instead of flooding the audit log with one
// clone3 record for every thread and popen().
func seccompPolicy(mode config.SeccompMode, info *arch.Info) (*seccomp.Policy, error) {
	deny, clone3 := seccomp.ActionErrno, seccomp.Action(seccompRetENOSYS)
	switch mode {
	case config.SeccompDefault, "":
	case config.SeccompLog:
		deny = seccomp.ActionLog
	default:
		return nil, fmt.Errorf("seccomp mode %q has no filter", mode)
	}
	var names []string
	for _, g := range seccompDenied {
		for _, n := range g.names {
			if _, ok := info.SyscallNames[n]; ok {
				names = append(names, n)
			} else if !seccompArchSpecific[n] {
				return nil, fmt.Errorf("seccomp: syscall %q unknown on %s", n, info.Name)
			}
		}
	}
	return &seccomp.Policy{
		DefaultAction: seccomp.ActionAllow,
		Syscalls: []seccomp.SyscallGroup{
			{Names: names, Action: deny},
			{NamesWithCondtions: []seccomp.NameWithConditions{{
				Name: "clone",
				Conditions: seccomp.ArgumentConditions{{
					Argument: 0, Operation: seccomp.BitsSet, Value: seccompCloneNamespaces,
				}},
			}}, Action: deny},
			{Names: []string{"clone3"}, Action: clone3},
		},
	}, nil
}

// seccompProgram assembles the filter of mode for the running architecture.
//
// The library's program lets a syscall made through another ABI than the
// native one fall through to the default action, which for a deny-list is
// "allow": a 32-bit binary written into the data directory and started by
// COPY … PROGRAM could then call mount through int 0x80. A guard in front
// answers every foreign-ABI syscall with ENOSYS instead (logs it in log
// mode); nothing a silo runs uses those ABIs.
func seccompProgram(mode config.SeccompMode) ([]bpf.Instruction, error) {
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w (set seccomp: off for silos on %s)", err, runtime.GOARCH)
	}
	policy, err := seccompPolicy(mode, info)
	if err != nil {
		return nil, err
	}
	body, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp: assembling the %s filter: %w", mode, err)
	}
	foreign := seccompRetENOSYS
	if mode == config.SeccompLog {
		foreign = uint32(unix.SECCOMP_RET_LOG)
	}
	guard := []bpf.Instruction{
		// seccomp_data.arch is at offset 4.
		bpf.LoadAbsolute{Off: 4, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(info.ID), SkipTrue: 1},
		bpf.RetConstant{Val: foreign},
	}
	return append(guard, body...), nil
}

// installSeccomp installs the silo's seccomp filter in the calling process:
// "default" (or empty) denies the syscalls of seccompDenied and clone's
// namespace flags with EPERM, "log" allows them but has the kernel log each
// use (SECCOMP_RET_LOG, visible as audit type=1326 records), "off" installs
// nothing. Both filters answer clone3 with ENOSYS (see seccompPolicy).
//
// It sets no_new_privs first (the kernel requires it of a process without
// CAP_SYS_ADMIN, and silo-init wants it anyway) and loads the filter with
// SECCOMP_FILTER_FLAG_TSYNC, which applies the filter and no_new_privs to
// every thread of the process: Go may run the fork of the postmaster on any
// of them, and the postmaster inherits the filter across exec.
//
// silo-init calls it last, after the root is built, the hostname set and
// applyPrivileges: from here on mount, pivot_root and sethostname fail.
func installSeccomp(mode config.SeccompMode) error {
	prog, err := seccompFilter(mode)
	if err != nil || prog == nil {
		return err
	}
	return loadSeccomp(mode, prog)
}

// seccompFilter assembles mode's filter for the seccomp system call; nil
// for mode off.
func seccompFilter(mode config.SeccompMode) (*unix.SockFprog, error) {
	if mode == config.SeccompOff {
		return nil, nil
	}
	insts, err := seccompProgram(mode)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(insts)
	if err != nil {
		return nil, fmt.Errorf("seccomp: encoding the filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}, nil
}

// loadSeccomp sets no_new_privs and installs prog on every thread of the
// process (TSYNC).
func loadSeccomp(mode config.SeccompMode, prog *unix.SockFprog) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: PR_SET_NO_NEW_PRIVS: %w", err)
	}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(prog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("seccomp: loading the %s filter: %w", mode, errno)
	}
	if r != 0 {
		// TSYNC reports the thread it could not synchronise.
		return fmt.Errorf("seccomp: thread %d could not take the filter: %w", r, errSeccompTSync)
	}
	return nil
}

// errSeccompTSync: another thread of the process already runs a filter the
// new one does not descend from.
var errSeccompTSync = errors.New("seccomp filter not synchronised to all threads")
