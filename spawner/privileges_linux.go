package spawner

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// privilegeSpec says how far silo-init lowers the privileges the postmaster
// will inherit.
type privilegeSpec struct {
	// CoreDumps keeps the inherited RLIMIT_CORE. Off by default: a
	// backend's core holds whatever it had in memory (other sessions' rows,
	// password verifiers) and is written into the silo's data directory.
	CoreDumps bool
}

// privilegeError names the step of applyPrivileges that failed, for the
// message silo-init sends back to the proxy.
type privilegeError struct {
	Step string
	Err  error
}

func (e *privilegeError) Error() string { return "privileges: " + e.Step + ": " + e.Err.Error() }

func (e *privilegeError) Unwrap() error { return e.Err }

// applyPrivileges makes sure nothing silo-init starts can hold or regain a
// capability, inside the silo's user namespace or through it:
//
//   - ambient capabilities are cleared and the inheritable set emptied: the
//     inheritable set is not masked by the bounding set, so a binary with
//     inheritable file capabilities could otherwise regain them on exec;
//   - every capability is dropped from the bounding set, so no exec (a file
//     capability, a setuid-root binary, ns-root itself) can add one back;
//   - RLIMIT_CORE is 0 unless p.CoreDumps;
//   - no_new_privs is set: setuid/setgid bits and file capabilities are
//     ignored by exec from here on, and seccomp may be installed without
//     CAP_SYS_ADMIN.
//
// silo-init keeps its own effective capabilities (it still has to start the
// postmaster as uid 1000 and signal it); the postmaster, started with a
// non-zero uid, loses its permitted and effective sets on that uid change
// and so ends with CapEff=CapPrm=CapInh=CapBnd=CapAmb=0.
//
// Dropping from the bounding set takes CAP_SETPCAP. A rootless silo-init
// holds only the ambient capabilities it was given for its mounts; without
// CAP_SETPCAP the bounding set stays full and the rest still applies. That
// leaves nothing to gain: with no_new_privs exec adds no capability from
// file capabilities or setuid bits, the inheritable and ambient sets are
// empty, and the one other way to a capability, a new user namespace
// (which resets the bounding set anyway), is closed by seccomp.
//
// Capabilities and no_new_privs are per thread: call this on the locked OS
// thread that later starts the postmaster (installSeccomp's TSYNC then
// extends no_new_privs to every thread).
func applyPrivileges(p privilegeSpec) error {
	// EINVAL: a kernel without ambient capabilities (before 4.3) has none
	// to clear.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil &&
		!errors.Is(err, unix.EINVAL) {
		return &privilegeError{Step: "PR_CAP_AMBIENT_CLEAR_ALL", Err: err}
	}
	setpcap, err := privClearInheritable()
	if err != nil {
		return err
	}
	if setpcap {
		if err := privDropBounding(); err != nil {
			return err
		}
	}
	if !p.CoreDumps {
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
			return &privilegeError{Step: "setrlimit RLIMIT_CORE 0", Err: err}
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return &privilegeError{Step: "PR_SET_NO_NEW_PRIVS", Err: err}
	}
	return nil
}

// privCapSetPCap is CAP_SETPCAP from <linux/capability.h>.
const privCapSetPCap = 8

// privClearInheritable empties the calling thread's inheritable set and
// leaves its effective and permitted sets as they are. It reports whether
// CAP_SETPCAP is effective, which dropping from the bounding set needs.
func privClearInheritable() (setpcap bool, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, &privilegeError{Step: "capget", Err: err}
	}
	setpcap = data[0].Effective&(1<<privCapSetPCap) != 0
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return false, &privilegeError{Step: "capset inheritable=0", Err: err}
	}
	return setpcap, nil
}

// privDropBounding drops every capability the kernel knows from the calling
// thread's bounding set. The kernel answers EINVAL for the first number past
// its last capability, which ends the loop without reading
// /proc/sys/kernel/cap_last_cap (the silo's /proc may not be mounted yet).
func privDropBounding() error {
	for c := 0; c < 64; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			if c == 0 {
				return &privilegeError{Step: "PR_CAPBSET_DROP", Err: err}
			}
			return nil
		}
		if err != nil {
			return &privilegeError{Step: fmt.Sprintf("PR_CAPBSET_DROP %d", c), Err: err}
		}
	}
	return nil
}
