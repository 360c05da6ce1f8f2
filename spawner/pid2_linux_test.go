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

	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/config"
)

// pid2ChildEnv makes the test binary PID 1 of a fresh pid namespace (a Go
// program whose runtime threads hold the low pids, as silo-init's do), where
// it starts programs with forkExecPID and prints what happened, one
// "case: result" line each.
const pid2ChildEnv = "SILO_TEST_PID2_CHILD"

func init() {
	if os.Getenv(pid2ChildEnv) != "1" {
		return
	}
	runtime.LockOSThread()
	run := func(name string, c initCommand, uid int, pid int, filter *unix.SockFprog) {
		e, err := newPID2Exec(c, uid, uid, true, filter)
		if err != nil {
			fmt.Printf("%s: prepare: %v\n", name, err)
			return
		}
		got, err := forkExecPID(e, pid)
		if err != nil {
			fmt.Printf("%s: error: %v (no set_tid: %v)\n", name, err, errors.Is(err, errNoSetTID))
			return
		}
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(got, &ws, 0, nil); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		fmt.Printf("%s: pid %d, exit %d\n", name, got, ws.ExitStatus())
	}
	sh := func(script, dir string) initCommand {
		return initCommand{Step: "sh", Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: dir}
	}
	// The child's stdout goes to init's stderr: print the script's
	// findings there, and the results on stdout.
	run("pid", sh(`echo "sh: pid=$$ uid=$(id -u) gid=$(id -g) groups=$(id -G) $(grep Seccomp: /proc/self/status)" >&2`, "/"), 1000, 300, nil)
	run("taken", sh("true", "/"), 0, 1, nil)
	run("exec", initCommand{Step: "x", Path: "/nonexistent/postgres", Args: []string{"postgres"}, Dir: "/"}, 0, 301, nil)
	run("chdir", sh("true", "/nonexistent"), 0, 302, nil)
	if err := applyPrivileges(privilegeSpec{}); err != nil { // no_new_privs, needed for the filter
		fmt.Printf("filter: applyPrivileges: %v\n", err)
	} else if prog, err := seccompFilter(config.SeccompDefault); err != nil {
		fmt.Printf("filter: %v\n", err)
	} else {
		run("filter", sh(`echo "filtered: $(grep Seccomp: /proc/self/status)" >&2`, "/"), 1000, 303, prog)
	}
	st, _ := os.ReadFile("/proc/self/status")
	fmt.Printf("init: %s\n", strings.Join(strings.Fields(seccompStatusField(string(st), "Seccomp")), " "))
	os.Exit(0)
}

// TestForkExecPID starts programs at chosen pids of a new pid namespace
// from a Go PID 1, as silo-init starts the postmaster as PID 2: each gets
// exactly the pid asked for, the uid and groups given, and the seccomp
// filter; a taken pid, a missing program and a missing directory are
// reported and start nothing.
func TestForkExecPID(t *testing.T) {
	cgroupNeedRoot(t)
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), pid2ChildEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: privHostIDBase, Size: 65536}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: privHostIDBase, Size: 65536}},
		GidMappingsEnableSetgroups: true,
		Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Skipf("cannot create a user and pid namespace here: %v", err)
		}
		t.Fatalf("child: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	out, logs := stdout.String(), stderr.String()
	t.Logf("child:\n%s%s", out, logs)
	if strings.Contains(out, "pid: error") && strings.Contains(out, "no set_tid: true") {
		t.Skipf("clone3 set_tid unavailable here:\n%s", out)
	}
	for _, want := range []string{
		"pid: pid 300, exit 0\n",
		"taken: error: ",
		"exec: error: execve: no such file or directory",
		"chdir: error: chdir: no such file or directory",
		"filter: pid 303, exit 0\n",
		"init: 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("child output lacks %q:\n%s\nstderr:\n%s", want, out, logs)
		}
	}
	if !strings.Contains(out, "(no set_tid: true)") {
		t.Errorf("a taken pid is not reported as errNoSetTID:\n%s", out)
	}
	for _, want := range []string{"sh: pid=300 uid=1000 gid=1000 groups=1000 Seccomp:\t0", "filtered: Seccomp:\t2"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the started programs did not report %q:\n%s", want, logs)
		}
	}
}
