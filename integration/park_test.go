package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// parkedInits returns the pids of the test process's silo-inits of silo
// that have no postmaster: parked ones.
func parkedInits(t testing.TB, silo string) []int {
	t.Helper()
	want := []byte("\x00" + spawner.InitArg + "\x00" + silo + "\x00")
	var pids []int
	for _, p := range hostProcs() {
		if p.PPid != os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, want) {
			continue
		}
		children, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/task/" + strconv.Itoa(p.Pid) + "/children")
		if strings.TrimSpace(string(children)) == "" {
			pids = append(pids, p.Pid)
		}
	}
	return pids
}

// TestParkedSilo follows a silo through parking: parked when the Manager
// starts and after each stop, stopped (no postmaster) while parked, its
// parked sandbox used by the next start; a reload that changes the silo
// replaces the sandbox, and a bind source replaced on the host makes the
// next start a fresh one that sees the new source; nothing is left once
// the Manager has shut down.
func TestParkedSilo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	src := e.MkdirShared("park-src")
	if err := os.WriteFile(filepath.Join(src, "v"), []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	silo := func(workMem string) config.Silo {
		return Silo("parkme", []string{"parkme"}, func(s *config.Silo) {
			s.Mounts = []config.Mount{{Source: src, Target: "/import", Mode: config.MountRO, Origin: "test"}}
			if workMem != "" {
				s.PostgresSettings = map[string]string{"work_mem": workMem}
			}
		})
	}
	cfg := e.Config(silo(""))
	m := e.startManager(cfg, nil)
	ctx := context.Background()
	parks := func() int { return strings.Count(e.Log.String(), `msg="silo parked" silo=parkme`) }
	waitParked := func(n int, what string) int {
		t.Helper()
		eventually(t, 60*time.Second, what, func() bool { return parks() >= n && len(parkedInits(t, "parkme")) == 1 })
		return parkedInits(t, "parkme")[0]
	}
	query := func(sql string) string {
		t.Helper()
		lease, err := m.Acquire(ctx, "parkme")
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Release()
		var out string
		if err := connectSilo(t, cfg, "parkme", "parkme").QueryRow(ctx, sql).Scan(&out); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	stop := func() {
		t.Helper()
		if err := m.Stop(ctx, "parkme", spawner.StopFast); err != nil {
			t.Fatal(err)
		}
	}

	// The first start bootstraps; only a silo with a data directory is
	// parked, after its first stop.
	if got := query("SELECT pg_read_file('/import/v')"); got != "first" {
		t.Fatalf("the bind source reads %q", got)
	}
	stop()
	init1 := waitParked(1, "the silo parked after its stop")
	if st := status(t, m, "parkme"); st.State != spawner.StateStopped || st.Pid != 0 {
		t.Errorf("a parked silo shows as %+v, want stopped without a pid", st)
	}

	// The next start uses the parked silo-init: the postmaster is its
	// child.
	lease, err := m.Acquire(ctx, "parkme")
	if err != nil {
		t.Fatal(err)
	}
	if pm := status(t, m, "parkme").Pid; pm == 0 || ppidOf(t, pm) != init1 {
		t.Errorf("the postmaster %d is not a child of the parked silo-init %d", pm, init1)
	}
	lease.Release()
	stop()
	init2 := waitParked(2, "the silo parked again")

	// A reload that changes the silo replaces its parked sandbox.
	next := *cfg
	next.Silos = []config.Silo{silo("7MB")}
	if err := m.Reconfigure(&next); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the parked sandbox replaced", func() bool {
		pids := parkedInits(t, "parkme")
		return len(pids) == 1 && pids[0] != init2
	})
	if got := query("SHOW work_mem"); got != "7MB" {
		t.Errorf("work_mem after the reload = %q, want the new setting", got)
	}
	stop()
	waitParked(parks()+1, "the silo parked after the reload")

	// A bind source replaced on the host (not just changed in place)
	// makes the parked sandbox stale: the start is a fresh one.
	if err := os.Rename(src, src+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "v"), []byte("second"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := query("SELECT pg_read_file('/import/v')"); got != "second" {
		t.Errorf("after the source was replaced the silo reads %q, want the new source's", got)
	}
	if !strings.Contains(e.Log.String(), `why="a bind source was replaced"`) {
		t.Errorf("the stale parked sandbox was not reported:\n%s", e.Log.String())
	}
	stop()
	waitParked(parks()+1, "the silo parked after the fresh start")

	ctx2, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx2, spawner.StopFast); err != nil {
		t.Fatal(err)
	}
	if pids := parkedInits(t, "parkme"); len(pids) != 0 {
		t.Errorf("parked silo-inits %v outlive the Manager", pids)
	}
}

// ppidOf returns the parent pid of pid.
func ppidOf(t testing.TB, pid int) int {
	t.Helper()
	for _, p := range hostProcs() {
		if p.Pid == pid {
			return p.PPid
		}
	}
	t.Fatalf("no process %d", pid)
	return 0
}
