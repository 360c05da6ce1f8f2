package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/elastic/go-seccomp-bpf/arch"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
)

// escapeRow is one line of the escape report.
type escapeRow struct {
	attack, expected, observed string
	blocked                    bool
}

// escapeReport collects the rows and prints them as a table at the end.
type escapeReport struct {
	t    *testing.T
	mu   sync.Mutex
	rows []escapeRow
}

// add records an attack. blocked is the verdict on the attack itself; a
// failed control is reported separately with t.Errorf by the caller, since
// an attack that "fails" because the probe is broken proves nothing.
func (r *escapeReport) add(t *testing.T, attack, expected, observed string, blocked bool) {
	t.Helper()
	observed = strings.Join(strings.Fields(observed), " ")
	if len(observed) > 110 {
		observed = observed[:107] + "..."
	}
	r.mu.Lock()
	r.rows = append(r.rows, escapeRow{attack, expected, observed, blocked})
	r.mu.Unlock()
	if !blocked {
		t.Errorf("NOT BLOCKED: %s: expected %s, observed %s", attack, expected, observed)
	}
}

func (r *escapeReport) print() {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "attack\texpected\tobserved\tverdict")
	fmt.Fprintln(w, "------\t--------\t--------\t-------")
	for _, row := range r.rows {
		v := "blocked"
		if !row.blocked {
			v = "NOT BLOCKED"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", row.attack, row.expected, row.observed, v)
	}
	w.Flush()
	r.t.Logf("escape attempts from silo a (layout standard, superuser, COPY … FROM PROGRAM):\n%s", b.String())
}

// escapeControl fails the test when a control shows the probe itself does
// not work: then the matching attack's failure would be meaningless.
func escapeControl(t *testing.T, what string, ok bool, observed string) {
	t.Helper()
	if !ok {
		t.Errorf("control failed, the probe proves nothing: %s: %s", what, strings.Join(strings.Fields(observed), " "))
	}
}

// shellOut joins siloShell's lines and returns the exit status separately.
func shellOut(lines []string) (string, int) {
	code := -1
	var out []string
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "exit="); ok {
			code, _ = strconv.Atoi(v)
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n"), code
}

// run runs script in the silo behind conn and returns its output and
// exit status.
func run(t *testing.T, conn *pgx.Conn, script string) (string, int) {
	t.Helper()
	// The group sends every command's stderr along, not just the last's.
	return shellOut(siloShell(t, conn, "{ "+script+"\n}"))
}

// perlSyscall returns a shell command making one raw syscall through
// perl(1) (present in the standard layout) and printing "errno=N" (0 on
// success): tools like mount(8) refuse unprivileged users before ever
// calling the kernel, which would hide whether seccomp answered. args is a
// perl list; it is copied into an array because syscall() may write into
// string arguments, which literals forbid.
func perlSyscall(nr int, args string) string {
	return fmt.Sprintf(`perl -e 'my @a = (%s); $!=0; my $r = syscall(%d, @a); printf "r=%%d errno=%%d\n", $r, ($r < 0 ? $!+0 : 0)'`, args, nr)
}

// perlPtraceChild attaches to a child of its own: allowed to its parent by
// the kernel (and Yama), so only seccomp can refuse it.
func perlPtraceChild(nr int) string {
	return fmt.Sprintf(`perl -e 'my $p = fork(); if (!$p) { sleep 10; exit 0 } $!=0; my $r = syscall(%d, 16, $p, 0, 0); printf "r=%%d errno=%%d\n", $r, ($r < 0 ? $!+0 : 0); kill 9, $p; waitpid($p, 0)'`, nr)
}

// hasLine reports whether out has a line equal to want.
func hasLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == want {
			return true
		}
	}
	return false
}

// errnoOf extracts the errno a perlSyscall probe printed, as a name
// ("ok" for success).
func errnoOf(out string) string {
	_, after, ok := strings.Cut(out, "errno=")
	if !ok {
		return "no answer: " + out
	}
	n, err := strconv.Atoi(strings.Fields(after)[0])
	if err != nil {
		return "no answer: " + out
	}
	if n == 0 {
		return "ok"
	}
	return unix.ErrnoName(unix.Errno(n))
}

// TestEscape attacks from a superuser session in silo a every boundary of
// docs/security.md, each next to a control showing the probe works, and
// prints the table attack | expected | observed. Silo b is the victim,
// silo c (seccomp: log) the control for the seccomp rows: the same raw
// syscalls pass there and land in the kernel log.
func TestEscape(t *testing.T) {
	e := newEnv(t)
	sysInfo, err := arch.GetInfo("")
	if err != nil {
		t.Skipf("no syscall table for this architecture: %v", err)
	}
	nr := func(name string) int { return sysInfo.SyscallNames[name] }

	// A setuid binary owned by silo a's own root (ns uid 0, host id_base),
	// mounted into a. The host's root is not mapped into a silo at all, so
	// a setuid-root binary would prove little; this one's owner is mapped,
	// so only no_new_privs (and nosuid) stand between it and euid 0.
	suidDir := e.MkdirShared("suid")
	idBin, err := exec.LookPath("id")
	if err != nil {
		t.Skip("id(1) not found")
	}
	suidID := filepath.Join(suidDir, "id")
	if b, err := os.ReadFile(idBin); err != nil || os.WriteFile(suidID, b, 0o755) != nil {
		t.Fatalf("copying %s: %v", idBin, err)
	}

	siloA := Silo("a", []string{"a"}, func(s *config.Silo) {
		s.Layout = config.LayoutStandard
		s.Limits = config.Limits{MemoryBytes: 256 << 20, Pids: 64}
		s.Mounts = append(s.Mounts, config.Mount{Source: suidDir, Target: "/opt/suid", Mode: config.MountRO, Origin: "escape_test"})
	})
	siloC := Silo("c", []string{"c"}, func(s *config.Silo) {
		s.Layout = config.LayoutStandard
		s.Seccomp = config.SeccompLog
	})
	cfg := e.Config(siloA, Silo("b", []string{"b"}), siloC)
	if err := os.WriteFile(cfg.Path, []byte("# the proxy's config: secret: hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := e.startManager(cfg, nil)
	startAll(t, m, "a", "b", "c")
	if strings.Contains(e.Log.String(), "cgroup limit not applied") {
		t.Logf("some limits are not enforced on this host:\n%s", e.Log.String())
	}

	aPid, bPid, cPid := status(t, m, "a").Pid, status(t, m, "b").Pid, status(t, m, "c").Pid
	aBase := procUID(t, aPid) - fslayout.PostgresUID
	if err := os.Chown(suidID, aBase, aBase); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(suidID, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	bPaths, aPaths := cfg.Paths("b"), cfg.Paths("a")
	connA := connectSilo(t, cfg, "a", "a")
	connC := connectSilo(t, cfg, "c", "c")
	rep := &escapeReport{t: t}
	defer rep.print()

	t.Run("files", func(t *testing.T) {
		out, code := run(t, connA, "ls "+fslayout.DataTarget)
		escapeControl(t, "list a's own data dir", code == 0 && strings.Contains(out, "PG_VERSION"), out)
		out, code = run(t, connA, "ls "+bPaths.Data+"; cat "+bPaths.Data+"/PG_VERSION")
		rep.add(t, "read b's data dir ("+bPaths.Data+")", "no such file", out,
			code != 0 && !hasLine(out, e.Install.Major) && strings.Contains(out, "No such file"))

		out, code = run(t, connA, "ls -a "+fslayout.SocketTarget)
		escapeControl(t, "list a's own socket dir", code == 0 && strings.Contains(out, ".s.PGSQL.5432"), out)
		out, code = run(t, connA, "ls -a "+bPaths.Run)
		rep.add(t, "list b's socket dir", "no such file", out, code != 0 && !strings.Contains(out, ".s.PGSQL"))

		out, code = run(t, connA, "cat /etc/passwd")
		escapeControl(t, "cat a's own /etc/passwd", code == 0 && strings.Contains(out, fslayout.PostgresUser+":"), out)
		out, code = run(t, connA, "cat /etc/shadow")
		rep.add(t, "read /etc/shadow", "no such file", out, code != 0 && !strings.Contains(out, "root:"))
		out, code = run(t, connA, "cat "+cfg.Path)
		rep.add(t, "read the proxy's config", "no such file", out, code != 0 && !strings.Contains(out, "hunter2"))
		pw := siloPassword(t, cfg, "b")
		out, code = run(t, connA, "cat "+bPaths.PasswordFile)
		rep.add(t, "read b's superuser password file", "no such file", out, code != 0 && !strings.Contains(out, pw))

		out, code = run(t, connA, "touch "+fslayout.DataTarget+"/escape-probe && rm "+fslayout.DataTarget+"/escape-probe")
		escapeControl(t, "write a's own data dir", code == 0, out)
		out, code = run(t, connA, "touch /usr/escape-probe; touch /opt/suid/escape-probe")
		rep.add(t, "write to the ro mounts /usr and /opt/suid", "read-only file system", out,
			code != 0 && strings.Count(out, "Read-only file system") == 2)
	})

	t.Run("postmaster socket", func(t *testing.T) {
		psqlIn := filepath.Join(e.Install.BinDir, "psql")
		out, _ := run(t, connA, psqlIn+" -w -h "+fslayout.SocketTarget+" -U postgres -d a -c 'select 1'")
		escapeControl(t, "psql reaches a's own postmaster (stops at the password)", strings.Contains(out, "password"), out)
		out, code := run(t, connA, psqlIn+" -w -h "+bPaths.Run+" -U postgres -d b -c 'select 1'")
		rep.add(t, "connect to b's postmaster socket", "no such file", out,
			code != 0 && strings.Contains(out, "No such file") && !strings.Contains(out, "password"))
	})

	t.Run("processes", func(t *testing.T) {
		// A marker process on the host, found by its argv.
		marker := exec.Command("sleep", "31337.25")
		if err := marker.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { marker.Process.Kill(); marker.Wait() }()
		// The bracket keeps the pattern from matching the probe's own
		// command line; -s hides processes that exit while grep runs.
		probe := "grep -ls '3133[7].25' /proc/[0-9]*/cmdline"
		host, _ := exec.Command("sh", "-c", probe).CombinedOutput()
		escapeControl(t, "the /proc probe finds the host marker from the host", strings.Contains(string(host), "/proc/"), string(host))
		out, _ := run(t, connA, probe+"; echo seen=$(ls -d /proc/[0-9]* | wc -l); tr '\\0' ' ' < /proc/1/cmdline")
		escapeControl(t, "a's /proc shows a's own init as PID 1", strings.Contains(out, "silo-init a"), out)
		rep.add(t, "see host processes in /proc", "only a's processes", out, !strings.Contains(out, "/cmdline"))

		out, code := run(t, connA, "sleep 30 & kill -9 $! && echo killed-own")
		escapeControl(t, "kill -9 a's own child", code == 0 && strings.Contains(out, "killed-own"), out)
		out, code = run(t, connA, fmt.Sprintf("kill -9 %d; cat /proc/%d/root%s/PG_VERSION", bPid, bPid, fslayout.DataTarget))
		alive := syscall.Kill(bPid, 0) == nil && status(t, m, "b").Pid == bPid
		rep.add(t, fmt.Sprintf("kill -9 b's postmaster by host pid %d; read it via /proc/%d/root", bPid, bPid),
			"no such process", out, code != 0 && alive && !hasLine(out, e.Install.Major))
	})

	t.Run("seccomp", func(t *testing.T) {
		probes := []struct {
			name, script, allowed string
		}{
			// Without the filter: ENOENT from the path lookup that
			// precedes the permission check.
			{"mount tmpfs on a missing dir", perlSyscall(nr("mount"), `"none", "/nonexistent-escape", "tmpfs", 0, 0`), "ENOENT"},
			// Without the filter: a nested user namespace, where the
			// unprivileged user is root and may mount.
			{"unshare(CLONE_NEWUSER)", perlSyscall(nr("unshare"), strconv.Itoa(unix.CLONE_NEWUSER)), "ok"},
			{"ptrace(PTRACE_ATTACH) own child", perlPtraceChild(nr("ptrace")), "ok"},
			{"bpf(invalid command)", perlSyscall(nr("bpf"), "0xffff, 0, 0"), "EINVAL"},
		}
		// A raw descriptor: an *os.File would park a read on the poller
		// instead of answering EAGAIN when the log has nothing new.
		kmsg, kmsgErr := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if kmsgErr == nil {
			defer unix.Close(kmsg)
			_, kmsgErr = unix.Seek(kmsg, 0, 2)
		}
		for _, p := range probes {
			out, _ := run(t, connC, p.script)
			escapeControl(t, p.name+" in silo c (seccomp: log) passes", errnoOf(out) == p.allowed, out)
			out, _ = run(t, connA, p.script)
			rep.add(t, p.name, "EPERM (seccomp)", errnoOf(out)+" ("+out+")", errnoOf(out) == "EPERM")
		}
		out, _ := run(t, connA, "grep -E 'NoNewPrivs|Seccomp:' /proc/self/status")
		escapeControl(t, "a's shell runs under the filter", strings.Contains(out, "Seccomp:\t2") || strings.Contains(out, "Seccomp: 2"), out)

		// seccomp: log leaves a trace of c's calls in the kernel log.
		if kmsgErr != nil {
			t.Logf("kernel log not readable (%v): the log trail of seccomp: log is not checked", kmsgErr)
			return
		}
		cUID := procUID(t, cPid)
		want := map[string]bool{}
		for _, n := range []string{"mount", "unshare", "ptrace", "bpf"} {
			want[fmt.Sprintf("syscall=%d ", nr(n))] = false
		}
		buf := make([]byte, 8192)
		deadline := time.Now().Add(5 * time.Second)
		found := 0
		for found < len(want) && time.Now().Before(deadline) {
			n, err := unix.Read(kmsg, buf)
			if errors.Is(err, unix.EAGAIN) {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if err != nil || n <= 0 {
				continue // EPIPE: records overwritten while we read
			}
			rec := string(buf[:n])
			if !strings.Contains(rec, "type=1326") || !strings.Contains(rec, fmt.Sprintf(" uid=%d ", cUID)) {
				continue
			}
			for k, seen := range want {
				if !seen && strings.Contains(rec, k) {
					want[k] = true
					found++
				}
			}
		}
		if found < len(want) {
			t.Logf("only %d of %d seccomp: log records reached /dev/kmsg (an audit daemon may take them): %v", found, len(want), want)
		} else {
			t.Logf("seccomp: log recorded c's mount, unshare, ptrace and bpf as audit type=1326 records")
		}
	})

	t.Run("setuid", func(t *testing.T) {
		// Control on the host: the setuid bit works for an ordinary user.
		ctl := exec.Command(suidID)
		ctl.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, NoSetGroups: true}}
		host, err := ctl.CombinedOutput()
		escapeControl(t, "the setuid id raises euid on the host", err == nil && strings.Contains(string(host), "euid="+strconv.Itoa(aBase)), string(host))
		out, code := run(t, connA, "/opt/suid/id")
		rep.add(t, "run a setuid binary owned by the silo's root", "euid stays 1000", out,
			code == 0 && strings.HasPrefix(out, "uid=1000") && !strings.Contains(out, "euid="))
		out, code = run(t, connA, "/opt/suid/id -u; ls -l /usr/bin/passwd; /usr/bin/passwd -S root")
		rep.add(t, "run the host's setuid-root passwd", "no privilege", out, code != 0 && strings.HasPrefix(out, "1000"))
	})

	t.Run("network", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		port := l.Addr().(*net.TCPAddr).Port
		probe := func(addr string, port int) string {
			return fmt.Sprintf("bash -c 'exec 3<>/dev/tcp/%s/%d && echo connected'", addr, port)
		}
		host, err := exec.Command("sh", "-c", probe("127.0.0.1", port)).CombinedOutput()
		escapeControl(t, "the TCP probe connects from the host", err == nil && strings.Contains(string(host), "connected"), string(host))
		// Control: the silo's own loopback is up and works, so what
		// keeps the host's 127.0.0.1 out is the network namespace.
		own, _ := run(t, connA, selfLoopbackProbe)
		escapeControl(t, "a's own 127.0.0.1 accepts a's connection", strings.Contains(own, "got ping"), own)
		out, _ := run(t, connA, probe("127.0.0.1", port)+"; "+probe("127.0.0.1", 6432))
		rep.add(t, fmt.Sprintf("TCP to the host's 127.0.0.1:%d and :6432", port), "no connection", out, !strings.Contains(out, "connected"))
		out, _ = run(t, connA, probe("192.0.2.1", 5432)+"; cat /proc/net/route")
		rep.add(t, "TCP to an outside address (192.0.2.1:5432)", "network unreachable", out,
			!strings.Contains(out, "connected") && strings.Contains(out, "unreachable"))
	})

	t.Run("fork bomb", func(t *testing.T) {
		if _, ok := m.Usage("a"); !ok || strings.Contains(e.Log.String(), "controller=pids") {
			t.Skip("no pids controller on this host")
		}
		bomb := connectSilo(t, cfg, "a", "a")
		release := filepath.Join(aPaths.Data, "escape-release")
		script := `perl -e 'my @k; my $n = 0; my $err = "none";
for (1..1000) { my $p = fork(); if (!defined $p) { $err = "$!"; last } if ($p == 0) { sleep 60; exit 0 } push @k, $p; $n++ }
until (-e "` + fslayout.DataTarget + `/escape-release") { select(undef, undef, undef, 0.05) }
kill 9, @k; waitpid($_, 0) for @k; print "forked $n, then: $err\n"'`
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			lines, err := siloShellErr(bomb, script+" 2>&1")
			done <- result{strings.Join(lines, " "), err}
		}()
		defer os.Remove(release)
		eventually(t, 60*time.Second, "silo a to reach its pids limit", func() bool {
			u, _ := m.Usage("a")
			return u.Pids >= 60
		})
		// While a is at its limit, b serves.
		bOut, bErr := psqlErr(cfg, "b", "b", "select 'b serves'", siloPassword(t, cfg, "b"))
		if err := os.WriteFile(release, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("the fork bomb did not stop after release")
		}
		if r.err != nil {
			t.Fatalf("fork bomb: %v", r.err)
		}
		u, _ := m.Usage("a")
		forked := 0
		fmt.Sscanf(r.out, "forked %d", &forked)
		escapeControl(t, "a forks freely below its limit", forked >= 10, r.out)
		rep.add(t, "fork bomb in a (pids limit 64)", "fork fails in a; b serves", r.out+fmt.Sprintf("; b: %s", strings.TrimSpace(bOut)),
			strings.Contains(r.out, "Resource temporarily unavailable") && forked < 64 && bErr == nil &&
				strings.Contains(bOut, "b serves") && u.Pids < 64)
	})

	t.Run("memory", func(t *testing.T) {
		u, ok := m.Usage("a")
		if !ok || u.MemoryBytes == 0 || strings.Contains(e.Log.String(), "controller=memory") {
			t.Skip("no memory controller on this host")
		}
		hog := connectSilo(t, cfg, "a", "a")
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var n int64
		err := hog.QueryRow(ctx, "select length(repeat('x', 32*1024*1024))").Scan(&n)
		escapeControl(t, "a allocates 32 MiB below its limit", err == nil && n == 32<<20, fmt.Sprint(n, err))
		err = hog.QueryRow(ctx, "select length(string_agg(repeat('x', 16*1024*1024), '')) from generate_series(1, 48)").Scan(&n)
		observed := fmt.Sprintf("%d bytes", n)
		if err != nil {
			observed = err.Error()
		}
		bOut, bErr := psqlErr(cfg, "b", "b", "select 'b serves'", siloPassword(t, cfg, "b"))
		after, _ := m.Usage("a")
		hostAlive := syscall.Kill(os.Getpid(), 0) == nil && syscall.Kill(bPid, 0) == nil
		rep.add(t, "allocate 768 MiB in a backend of a (memory limit 256 MiB)", "a's backend fails; b serves",
			fmt.Sprintf("%s; b: %s; a now %d MiB", observed, strings.TrimSpace(bOut), after.MemoryBytes>>20),
			err != nil && bErr == nil && strings.Contains(bOut, "b serves") && hostAlive && after.MemoryBytes <= 256<<20)
		// a recovers on its own: its postmaster survives a killed backend.
		eventually(t, 60*time.Second, "silo a to serve again", func() bool {
			out, err := psqlErr(cfg, "a", "a", "select 'a again'", siloPassword(t, cfg, "a"))
			return err == nil && strings.Contains(out, "a again")
		})
	})
}
