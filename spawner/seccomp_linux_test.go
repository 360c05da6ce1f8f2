package spawner

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/config"
)

func TestSeccompDeniedNamesKnown(t *testing.T) {
	t.Parallel()
	listed := map[string]bool{}
	for _, g := range seccompDenied {
		for _, n := range g.names {
			if listed[n] {
				t.Errorf("%s listed twice", n)
			}
			listed[n] = true
			_, x86 := arch.X86_64.SyscallNames[n]
			_, arm := arch.AARCH64.SyscallNames[n]
			switch {
			case !x86 && !arm:
				t.Errorf("%s is a syscall on neither x86_64 nor aarch64", n)
			case (!x86 || !arm) && !seccompArchSpecific[n]:
				t.Errorf("%s is missing on one architecture but not marked arch-specific", n)
			}
		}
	}
	for n := range seccompArchSpecific {
		if !listed[n] {
			t.Errorf("arch-specific %s is not denied", n)
		}
	}
	// What PostgreSQL, glibc and COPY … PROGRAM's shell rely on.
	for _, n := range []string{"clone", "clone3", "execve", "personality", "setuid", "kill", "shmget", "mmap", "socket", "wait4", "prctl"} {
		if listed[n] {
			t.Errorf("%s is denied outright", n)
		}
	}
}

func TestSeccompPolicyModes(t *testing.T) {
	t.Parallel()
	info, err := arch.GetInfo("")
	if err != nil {
		t.Skipf("no syscall table for %s: %v", runtime.GOARCH, err)
	}
	for _, mode := range []config.SeccompMode{config.SeccompDefault, config.SeccompLog, ""} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			insts, err := seccompProgram(mode)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := bpf.Assemble(insts)
			if err != nil {
				t.Fatal(err)
			}
			// BPF_MAXINSNS: the kernel rejects longer filters.
			if len(raw) == 0 || len(raw) > 4096 {
				t.Errorf("%d instructions", len(raw))
			}
		})
	}
	for _, mode := range []config.SeccompMode{config.SeccompOff, "strict"} {
		if _, err := seccompPolicy(mode, info); err == nil {
			t.Errorf("mode %q produced a filter", mode)
		}
	}
}

// seccompData lays out struct seccomp_data for x/net/bpf's VM. The kernel
// loads 32-bit words in native byte order; the VM loads them big-endian. So
// each word the kernel would read at an offset is stored big-endian at that
// offset, and the filter sees the values the kernel would show it.
func seccompData(nr int, auditArch uint32, args ...uint64) []byte {
	native := make([]byte, 64)
	binary.NativeEndian.PutUint32(native[0:], uint32(nr))
	binary.NativeEndian.PutUint32(native[4:], auditArch)
	for i, a := range args {
		binary.NativeEndian.PutUint64(native[16+8*i:], a)
	}
	out := make([]byte, 64)
	for o := 0; o < 64; o += 4 {
		binary.BigEndian.PutUint32(out[o:], binary.NativeEndian.Uint32(native[o:]))
	}
	return out
}

// TestSeccompVerdicts runs the assembled filter on synthetic syscalls.
func TestSeccompVerdicts(t *testing.T) {
	t.Parallel()
	info, err := arch.GetInfo("")
	if err != nil {
		t.Skipf("no syscall table for %s: %v", runtime.GOARCH, err)
	}
	foreign := arch.I386
	if info == arch.AARCH64 {
		foreign = arch.ARM
	}
	nr := func(name string) int {
		n, ok := info.SyscallNames[name]
		if !ok {
			t.Fatalf("no syscall %s on %s", name, info.Name)
		}
		return n
	}
	const (
		allow = uint32(unix.SECCOMP_RET_ALLOW)
		log   = uint32(unix.SECCOMP_RET_LOG)
	)
	sigchld := uint64(unix.SIGCHLD)
	fork := uint64(unix.CLONE_CHILD_SETTID|unix.CLONE_CHILD_CLEARTID) | sigchld
	thread := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM)
	tests := []struct {
		name      string
		data      []byte
		deny, log uint32
	}{
		{"getpid", seccompData(nr("getpid"), uint32(info.ID)), allow, allow},
		{"openat", seccompData(nr("openat"), uint32(info.ID), 0, 0, 0), allow, allow},
		{"personality", seccompData(nr("personality"), uint32(info.ID), 0xffffffff), allow, allow},
		{"mount", seccompData(nr("mount"), uint32(info.ID)), seccompRetEPERM, log},
		{"umount2", seccompData(nr("umount2"), uint32(info.ID)), seccompRetEPERM, log},
		{"unshare", seccompData(nr("unshare"), uint32(info.ID), unix.CLONE_NEWUSER), seccompRetEPERM, log},
		{"setns", seccompData(nr("setns"), uint32(info.ID)), seccompRetEPERM, log},
		{"ptrace", seccompData(nr("ptrace"), uint32(info.ID)), seccompRetEPERM, log},
		{"bpf", seccompData(nr("bpf"), uint32(info.ID)), seccompRetEPERM, log},
		{"reboot", seccompData(nr("reboot"), uint32(info.ID)), seccompRetEPERM, log},
		{"finit_module", seccompData(nr("finit_module"), uint32(info.ID)), seccompRetEPERM, log},
		{"keyctl", seccompData(nr("keyctl"), uint32(info.ID)), seccompRetEPERM, log},
		{"clone fork", seccompData(nr("clone"), uint32(info.ID), fork), allow, allow},
		{"clone thread", seccompData(nr("clone"), uint32(info.ID), thread), allow, allow},
		{"clone vfork", seccompData(nr("clone"), uint32(info.ID), unix.CLONE_VM|unix.CLONE_VFORK|sigchld), allow, allow},
		{"clone newuser", seccompData(nr("clone"), uint32(info.ID), unix.CLONE_NEWUSER|sigchld), seccompRetEPERM, log},
		{"clone newns", seccompData(nr("clone"), uint32(info.ID), unix.CLONE_NEWNS|sigchld), seccompRetEPERM, log},
		{"clone newnet", seccompData(nr("clone"), uint32(info.ID), unix.CLONE_NEWNET), seccompRetEPERM, log},
		{"clone newpid high bits", seccompData(nr("clone"), uint32(info.ID), 0xffffffff00000000|unix.CLONE_NEWPID), seccompRetEPERM, log},
		{"clone3", seccompData(nr("clone3"), uint32(info.ID)), seccompRetENOSYS, seccompRetENOSYS},
		{"foreign ABI getpid", seccompData(foreign.SyscallNames["getpid"], uint32(foreign.ID)), seccompRetENOSYS, log},
		{"foreign ABI mount", seccompData(foreign.SyscallNames["mount"], uint32(foreign.ID)), seccompRetENOSYS, log},
	}
	if info == arch.X86_64 {
		tests = append(tests, struct {
			name      string
			data      []byte
			deny, log uint32
		}{"x32 mount", seccompData(arch.X32.SyscallNames["mount"]|arch.X32.SeccompMask, uint32(info.ID)), seccompRetENOSYS, seccompRetENOSYS})
	}
	vms := map[config.SeccompMode]*bpf.VM{}
	for _, mode := range []config.SeccompMode{config.SeccompDefault, config.SeccompLog} {
		insts, err := seccompProgram(mode)
		if err != nil {
			t.Fatal(err)
		}
		vm, err := bpf.NewVM(insts)
		if err != nil {
			t.Fatal(err)
		}
		vms[mode] = vm
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for mode, want := range map[config.SeccompMode]uint32{config.SeccompDefault: tt.deny, config.SeccompLog: tt.log} {
				got, err := vms[mode].Run(tt.data)
				if err != nil {
					t.Fatal(err)
				}
				if uint32(got) != want {
					t.Errorf("%s: verdict %#x, want %#x", mode, uint32(got), want)
				}
			}
		})
	}
}

// seccompChildEnv makes the test binary a child that installs the filter
// of the named mode and reports what each probe returns.
const seccompChildEnv = "SILO_TEST_SECCOMP_CHILD"

// seccompProbes are syscalls that are harmless when allowed: each is made
// with arguments the kernel rejects (or that change nothing) before it acts,
// so the unfiltered answer is an ordinary error such as ENOENT or EINVAL,
// distinguishable from the filter's EPERM. Nothing that could change the
// host if the filter failed (reboot, kexec, sethostname) is probed.
var seccompProbes = []struct {
	name string
	run  func() error
}{
	{"getpid", func() error {
		if unix.Getpid() != os.Getpid() {
			return errors.New("getpid disagrees")
		}
		return nil
	}},
	{"read", func() error { _, err := os.ReadFile("/proc/self/status"); return err }},
	{"fork-exec", func() error { return exec.Command("/bin/true").Run() }},
	{"personality", func() error { return seccompErrno(unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)) }},
	{"mount", func() error { return unix.Mount("none", "/nonexistent/silo-probe", "tmpfs", 0, "") }},
	{"umount2", func() error { return unix.Unmount("/nonexistent/silo-probe", 0xffff) }},
	{"pivot_root", func() error { return unix.PivotRoot("/nonexistent/a", "/nonexistent/b") }},
	{"chroot", func() error { return unix.Chroot("/nonexistent/silo-probe") }},
	// CLONE_NEWUSER is refused to a multithreaded process: EINVAL.
	{"unshare", func() error { return unix.Unshare(unix.CLONE_NEWUSER) }},
	{"setns", func() error { return unix.Setns(-1, 0) }},
	{"clone-newuser", func() error {
		cmd := exec.Command("/bin/true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		return cmd.Run()
	}},
	{"clone3", func() error { return seccompErrno(unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)) }},
	// Peeking at a process we do not trace: ESRCH.
	{"ptrace", func() error {
		return seccompErrno(unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKDATA, uintptr(os.Getpid()), 0, 0, 0, 0))
	}},
	{"process_vm_readv", func() error { _, err := unix.ProcessVMReadv(os.Getpid(), nil, nil, 0); return err }},
	{"bpf", func() error { return seccompErrno(unix.Syscall(unix.SYS_BPF, 0xffff, 0, 0)) }},
	{"perf_event_open", func() error {
		return seccompErrno(unix.Syscall6(unix.SYS_PERF_EVENT_OPEN, 0, 0, ^uintptr(0), ^uintptr(0), 0, 0))
	}},
	{"keyctl", func() error { return seccompErrno(unix.Syscall(unix.SYS_KEYCTL, 9999, 0, 0)) }},
	{"open_by_handle_at", func() error {
		return seccompErrno(unix.Syscall(unix.SYS_OPEN_BY_HANDLE_AT, ^uintptr(0), 0, 0))
	}},
	{"userfaultfd", func() error { return seccompErrno(unix.Syscall(unix.SYS_USERFAULTFD, 0xffff, 0, 0)) }},
	{"io_uring_setup", func() error { return seccompErrno(unix.Syscall(unix.SYS_IO_URING_SETUP, 0, 0, 0)) }},
	// Both arguments NULL: the kernel checks permission and sets nothing.
	{"settimeofday", func() error { return seccompErrno(unix.Syscall(unix.SYS_SETTIMEOFDAY, 0, 0, 0)) }},
}

func seccompErrno(_, _ uintptr, errno unix.Errno) error {
	if errno != 0 {
		return errno
	}
	return nil
}

// seccompOutcome renders a probe's result as "ok" or the errno's name.
func seccompOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return strconv.Itoa(int(errno))
	}
	return "error: " + err.Error()
}

// seccompStatusField returns a field of /proc/self/status.
func seccompStatusField(status, field string) string {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func init() {
	mode, ok := os.LookupEnv(seccompChildEnv)
	if !ok {
		return
	}
	runtime.LockOSThread()
	if err := installSeccomp(config.SeccompMode(mode)); err != nil {
		fmt.Fprintln(os.Stderr, "installSeccomp:", err)
		os.Exit(2)
	}
	out := map[string]string{}
	for _, p := range seccompProbes {
		out[p.name] = seccompOutcome(p.run())
	}
	if prog := os.Getenv(seccompInt80Env); prog != "" {
		out["int80-getpid"] = seccompRunInt80(prog)
	}
	status, _ := os.ReadFile("/proc/self/status")
	out["status:Seccomp"] = seccompStatusField(string(status), "Seccomp")
	out["status:NoNewPrivs"] = seccompStatusField(string(status), "NoNewPrivs")
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(3)
	}
	os.Exit(0)
}

// seccompInt80Env names a program the child runs to make a syscall through
// the i386 ABI (int 0x80) of an x86_64 kernel.
const seccompInt80Env = "SILO_TEST_SECCOMP_INT80"

// seccompInt80Source calls getpid (i386 number 20) through int 0x80 and
// prints the raw return value: a pid, or -errno.
const seccompInt80Source = `#include <stdio.h>
int main(void) {
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
	printf("%ld\n", r);
	return 0;
}
`

// seccompRunInt80 runs the int 0x80 program and renders its answer like a
// probe outcome.
func seccompRunInt80(prog string) string {
	out, err := exec.Command(prog).Output()
	if err != nil {
		return "error: " + err.Error()
	}
	r, err := strconv.Atoi(strings.TrimSpace(string(out)))
	switch {
	case err != nil:
		return "error: output " + strconv.Quote(string(out))
	case r > 0:
		return "ok"
	}
	return seccompOutcome(unix.Errno(-r))
}

// seccompRunChild runs the probes under mode in a fresh child process.
func seccompRunChild(t *testing.T, mode config.SeccompMode, env ...string) (map[string]string, int) {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(append(os.Environ(), seccompChildEnv+"="+string(mode)), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child (%s): %v\n%s", mode, err, stderr.String())
	}
	out := map[string]string{}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("child (%s) output %q: %v", mode, stdout.String(), err)
	}
	return out, cmd.Process.Pid
}

// seccompDeniedProbes is what the default filter answers for each probe.
var seccompDeniedProbes = map[string]string{
	"mount": "EPERM", "umount2": "EPERM", "pivot_root": "EPERM", "chroot": "EPERM",
	"unshare": "EPERM", "setns": "EPERM", "clone-newuser": "EPERM", "clone3": "ENOSYS",
	"ptrace": "EPERM", "process_vm_readv": "EPERM", "bpf": "EPERM", "perf_event_open": "EPERM",
	"keyctl": "EPERM", "open_by_handle_at": "EPERM", "userfaultfd": "EPERM",
	"io_uring_setup": "EPERM", "settimeofday": "EPERM",
}

// TestSeccompInChild installs each mode in a re-executed child and compares
// what the probes return: default denies exactly the probed attacks while
// ordinary syscalls (and fork/exec through glibc-free Go) still work; log
// answers as off does, except for clone3's ENOSYS.
func TestSeccompInChild(t *testing.T) {
	if _, err := arch.GetInfo(""); err != nil {
		t.Skipf("no seccomp filter for %s", runtime.GOARCH)
	}
	off, _ := seccompRunChild(t, config.SeccompOff)
	def, _ := seccompRunChild(t, config.SeccompDefault)

	t.Run("default", func(t *testing.T) {
		for _, p := range seccompProbes {
			want, denied := seccompDeniedProbes[p.name]
			if !denied {
				want = "ok"
			}
			if got := def[p.name]; got != want {
				t.Errorf("%s: %s, want %s", p.name, got, want)
			}
		}
		if def["status:Seccomp"] != "2" || def["status:NoNewPrivs"] != "1" {
			t.Errorf("status Seccomp=%s NoNewPrivs=%s, want 2 and 1", def["status:Seccomp"], def["status:NoNewPrivs"])
		}
	})

	t.Run("controls", func(t *testing.T) {
		if off["status:Seccomp"] != "0" {
			t.Fatalf("off installed a filter: Seccomp=%s", off["status:Seccomp"])
		}
		if os.Geteuid() != 0 {
			t.Skip("unprivileged, several probes fail with EPERM without any filter")
		}
		// Without the filter each probe answers something else: the
		// EPERM above is the filter's, not the kernel's.
		for name, denied := range seccompDeniedProbes {
			if off[name] == denied {
				t.Errorf("%s answers %s without a filter too; the probe proves nothing", name, denied)
			}
		}
	})

	t.Run("log", func(t *testing.T) {
		// A raw descriptor: an *os.File would park a read on the poller
		// instead of answering EAGAIN when the log has nothing new.
		kmsg, kmsgErr := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if kmsgErr == nil {
			defer unix.Close(kmsg)
			_, kmsgErr = unix.Seek(kmsg, 0, io.SeekEnd)
		}
		got, pid := seccompRunChild(t, config.SeccompLog)
		for _, p := range seccompProbes {
			want := off[p.name]
			if p.name == "clone3" {
				want = "ENOSYS" // glibc's fallback to clone, in every mode
			}
			if got[p.name] != want {
				t.Errorf("%s: %s under log, want %s as without a filter", p.name, got[p.name], want)
			}
		}
		if got["status:Seccomp"] != "2" {
			t.Errorf("log mode installed no filter: Seccomp=%s", got["status:Seccomp"])
		}

		t.Run("kernel log", func(t *testing.T) {
			if kmsgErr != nil {
				t.Skipf("kernel log not readable: %v", kmsgErr)
			}
			if b, err := os.ReadFile("/proc/sys/kernel/seccomp/actions_logged"); err != nil || !strings.Contains(string(b), "log") {
				t.Skipf("the kernel does not log SECCOMP_RET_LOG (actions_logged %q, %v)", b, err)
			}
			info, _ := arch.GetInfo("")
			want := []string{"type=1326", "pid=" + strconv.Itoa(pid) + " ", "syscall=" + strconv.Itoa(info.SyscallNames["mount"]) + " "}
			buf := make([]byte, 8192)
			// kauditd writes asynchronously; give it a moment.
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				n, err := unix.Read(kmsg, buf)
				if errors.Is(err, unix.EAGAIN) {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				if errors.Is(err, unix.EPIPE) {
					continue // overwritten records
				}
				if err != nil || n <= 0 {
					t.Skipf("reading the kernel log: %v", err)
				}
				rec := string(buf[:n])
				if strings.Contains(rec, want[0]) && strings.Contains(rec, want[1]) && strings.Contains(rec, want[2]) {
					t.Logf("kernel log: %s", strings.TrimSpace(rec))
					return
				}
			}
			t.Skip("no audit record for the logged mount reached /dev/kmsg (an audit daemon may be consuming them)")
		})
	})
}

// TestSeccompForeignABI makes a real i386-ABI syscall from inside the
// filter. Without the architecture guard the library's filter would let it
// through to the default action, allow; with it the answer is ENOSYS.
func TestSeccompForeignABI(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("int 0x80 exists on x86_64 only")
	}
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found to build the int 0x80 program")
	}
	dir := t.TempDir()
	src, prog := dir+"/int80.c", dir+"/int80"
	if err := os.WriteFile(src, []byte(seccompInt80Source), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-O0", "-o", prog, src).CombinedOutput(); err != nil {
		t.Skipf("building the int 0x80 program: %v\n%s", err, out)
	}
	off, _ := seccompRunChild(t, config.SeccompOff, seccompInt80Env+"="+prog)
	if off["int80-getpid"] != "ok" {
		t.Skipf("the kernel runs no i386 syscalls here (%s)", off["int80-getpid"])
	}
	def, _ := seccompRunChild(t, config.SeccompDefault, seccompInt80Env+"="+prog)
	if got := def["int80-getpid"]; got != "ENOSYS" {
		t.Errorf("i386 getpid under the default filter: %s, want ENOSYS", got)
	}
}
