package integration

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/silo-proxy/silo-proxy/spawner"
)

// rootlessUID is the unprivileged host user the rootless test runs as; it
// needs no passwd entry.
const rootlessUID = 4242

// TestRootlessSilo runs a silo from an unprivileged user: the user
// namespace maps only that user (as the silo's postgres, ns uid 1000), and
// the silo is otherwise the same: its own root, pid, net, ipc and uts
// namespaces, a postmaster without capabilities. The test needs root only
// to become that user and to inspect the result.
func TestRootlessSilo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, d := range []string{e.StateDir, e.RootsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, rootlessUID, rootlessUID); err != nil {
			t.Fatal(err)
		}
	}
	pc := e.WriteConfig(`
silos:
  - name: solo
    databases: [solo]
`)
	cfg := e.LoadConfig(pc.Path)
	bin := copyTestBinary(t, e.Dir)
	serve, rep := startServeAs(t, pc.Path, bin, &syscall.Credential{Uid: rootlessUID, Gid: rootlessUID})
	if !strings.Contains(serve.Logs(), "mode=rootless") {
		t.Errorf("the serve log does not report rootless mode:\n%s", serve.Logs())
	}
	st := rep.Statuses[0]
	if st.State != spawner.StateRunning || st.Pid == 0 {
		t.Fatalf("status %+v", st)
	}
	if got := psql(t, cfg, "solo", "solo", "SELECT current_database() || ' ' || current_user"); got != "solo postgres" {
		t.Errorf("psql: %q", got)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	uid := strconv.Itoa(rootlessUID)
	for k, want := range map[string]string{
		"Uid":        uid + " " + uid + " " + uid + " " + uid,
		"CapEff":     "0000000000000000",
		"CapPrm":     "0000000000000000",
		"CapAmb":     "0000000000000000",
		"CapBnd":     "0000000000000000",
		"NoNewPrivs": "1",
	} {
		if fields[k] != want {
			t.Errorf("postmaster %s = %q, want %q", k, fields[k], want)
		}
	}
	if ns := strings.Fields(fields["NSpid"]); len(ns) != 2 || ns[1] != "2" {
		t.Errorf("postmaster NSpid %q, want its own pid namespace with pid 2", fields["NSpid"])
	}
	if pidNS(t, st.Pid) == pidNS(t, os.Getpid()) {
		t.Error("the rootless postmaster shares the host's pid namespace")
	}
	// network: none is a network namespace of the silo's own whose lo is
	// up: the kernel adds 127.0.0.1 to lo's local routes when it goes up.
	netNS, _ := os.Readlink("/proc/" + strconv.Itoa(st.Pid) + "/ns/net")
	hostNetNS, _ := os.Readlink("/proc/self/ns/net")
	if netNS == "" || netNS == hostNetNS {
		t.Errorf("the rootless postmaster's network namespace %q is the host's %q", netNS, hostNetNS)
	}
	if trie, err := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/net/fib_trie"); err != nil || !strings.Contains(string(trie), "127.0.0.1") {
		t.Errorf("lo of the rootless silo is not up (no 127.0.0.1 in its fib_trie): %v\n%s", err, trie)
	}
	owner, _, _ := fileOwner(t, cfg.Paths("solo").Data)
	if owner != rootlessUID {
		t.Errorf("data directory owned by %d, want %d", owner, rootlessUID)
	}
	if _, err := os.Stat(cfg.Paths("solo").IDMap); err == nil {
		t.Error("rootless mode recorded an idmap: it maps no range")
	}

	// The silo dies with its proxy here too.
	ns := pidNS(t, st.Pid)
	serve.Cmd.Process.Signal(syscall.SIGKILL)
	eventually(t, 20*time.Second, "the rootless silo to die with its proxy", func() bool {
		for _, p := range hostProcs() {
			if p.PidNS == ns {
				return false
			}
		}
		return true
	})
}
