package spawner

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/silo-proxy/silo-proxy/config"
)

// privChildEnv makes the test binary play silo-init: ns-root in a fresh
// user namespace, it prints its own status, applies the privilege drop and
// the default seccomp filter, then starts a grandchild as ns uid 1000 the
// way silo-init starts the postmaster, and lets it print its status and
// limits.
const privChildEnv = "SILO_TEST_PRIV_CHILD"

// privHostIDBase is the host uid/gid the test's user namespace maps ns 0
// to. Nothing is created with these ids.
const privHostIDBase = 2_000_000_000

func init() {
	if os.Getenv(privChildEnv) != "1" {
		return
	}
	runtime.LockOSThread()
	fail := func(step string, err error) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", step, err)
		os.Exit(2)
	}
	before, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fail("read status", err)
	}
	fmt.Printf("== init before\n%s", before)
	if err := applyPrivileges(privilegeSpec{}); err != nil {
		fail("applyPrivileges", err)
	}
	if err := installSeccomp(config.SeccompDefault); err != nil {
		fail("installSeccomp", err)
	}
	fmt.Println("== postmaster")
	cmd := exec.Command("/bin/cat", "/proc/self/status", "/proc/self/limits")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: 1000, Gid: 1000, NoSetGroups: true},
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fail("grandchild", err)
	}
	os.Exit(0)
}

// privSection returns the lines of one "== name" section of the child's
// output.
func privSection(out, name string) string {
	_, rest, ok := strings.Cut(out, "== "+name+"\n")
	if !ok {
		return ""
	}
	if i := strings.Index(rest, "\n== "); i >= 0 {
		rest = rest[:i+1]
	}
	return rest
}

// TestPrivilegesInUserNamespace checks what a postmaster started by
// silo-init inherits: no capability in any set, no_new_privs, the seccomp
// filter, and no core dumps. The child's own status before the drop is the
// control: it starts with capabilities, so zeros afterwards are the drop's
// doing. Both of the spawner's modes are played: privileged (ns-root over a
// 65536-id range) and rootless (the single mapped uid 1000 holding
// CAP_SYS_ADMIN as an ambient capability).
func TestPrivilegesInUserNamespace(t *testing.T) {
	cgroupNeedRoot(t)
	const zero = "0000000000000000"
	tests := []struct {
		name string
		attr *syscall.SysProcAttr
		// bounding is CapBnd expected of the postmaster; "" accepts any
		// value (see applyPrivileges on silo-init without CAP_SETPCAP).
		bounding string
	}{
		{name: "privileged", bounding: zero, attr: &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: privHostIDBase, Size: 65536}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: privHostIDBase, Size: 65536}},
			// Become ns-root before exec, as silo-init does: an unmapped
			// uid would lose every capability at exec.
			Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
		}},
		{name: "rootless", attr: &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 1000, HostID: privHostIDBase + 1000, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 1000, HostID: privHostIDBase + 1000, Size: 1}},
			Credential:  &syscall.Credential{Uid: 1000, Gid: 1000, NoSetGroups: true},
			AmbientCaps: []uintptr{21}, // CAP_SYS_ADMIN, for the mounts
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("/proc/self/exe", "-test.run=^$")
			cmd.Env = append(os.Environ(), privChildEnv+"=1")
			cmd.SysProcAttr = tt.attr
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				var exit *exec.ExitError
				if !errors.As(err, &exit) {
					t.Skipf("cannot create a user namespace here: %v", err)
				}
				t.Fatalf("child: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			out := stdout.String()
			before, pm := privSection(out, "init before"), privSection(out, "postmaster")
			if before == "" || pm == "" {
				t.Fatalf("child output lacks a section:\n%s", out)
			}
			if v := seccompStatusField(before, "CapBnd"); v == "" || v == zero {
				t.Fatalf("control: silo-init's bounding set before the drop is %q, want it full", v)
			}
			if v := seccompStatusField(before, "CapEff"); v == zero {
				t.Fatalf("control: silo-init has no effective capabilities to drop (CapEff %s)", v)
			}
			want := map[string]string{
				"Uid":        "1000\t1000\t1000\t1000",
				"Gid":        "1000\t1000\t1000\t1000",
				"CapInh":     zero,
				"CapPrm":     zero,
				"CapEff":     zero,
				"CapAmb":     zero,
				"NoNewPrivs": "1",
				"Seccomp":    "2",
			}
			if tt.bounding != "" {
				want["CapBnd"] = tt.bounding
			}
			for field, v := range want {
				if got := seccompStatusField(pm, field); got != v {
					t.Errorf("postmaster %s = %q, want %q", field, got, v)
				}
			}
			var core string
			for _, line := range strings.Split(pm, "\n") {
				if strings.HasPrefix(line, "Max core file size") {
					core = strings.Join(strings.Fields(line)[4:6], " ")
				}
			}
			if core != "0 0" {
				t.Errorf("core file size soft/hard = %q, want 0 0", core)
			}
		})
	}
}
