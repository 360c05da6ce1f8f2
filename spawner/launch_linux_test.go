package spawner

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

func TestCheckReachable(t *testing.T) {
	t.Parallel()
	base, err := os.MkdirTemp("", "reach-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o755)
	mk := func(p string, mode os.FileMode) string {
		full := filepath.Join(base, p)
		if err := os.MkdirAll(full, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
		return full
	}
	open := mk("open/src", 0o755)
	mk("closed", 0o755)
	closedSrc := mk("closed/src", 0o755)
	os.Chmod(filepath.Join(base, "closed"), 0o700)
	mk("traverse", 0o755)
	travSrc := mk("traverse/src", 0o755)
	os.Chmod(filepath.Join(base, "traverse"), 0o711)
	r := IDRange{HostID: 3_000_000_000, Size: IDRangeSize}
	plan := func(src string) fslayout.Plan {
		return fslayout.Plan{Ops: []fslayout.MountOp{
			{Kind: fslayout.OpTmpfs, Target: "/tmp"},
			{Kind: fslayout.OpBind, Source: src, Target: "/import", Origin: "config.yaml:14"},
		}}
	}
	if err := checkReachable(plan(open), r); err != nil {
		t.Errorf("open source: %v", err)
	}
	if err := checkReachable(plan(travSrc), r); err != nil {
		t.Errorf("source below a 0711 directory: %v", err)
	}
	if err := checkReachable(plan(filepath.Join(base, "missing")), r); err != nil {
		t.Errorf("a missing source is init's to report, got %v", err)
	}
	err = checkReachable(plan(closedSrc), r)
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("source below a 0700 directory: %v, want *UnreachableError", err)
	}
	closed := filepath.Join(base, "closed")
	if ue.Dir != closed || ue.Mode.Perm() != 0o700 {
		t.Errorf("UnreachableError %+v names %s mode %v, want %s 0700", ue, ue.Dir, ue.Mode.Perm(), closed)
	}
	for _, want := range []string{"bind " + closedSrc + " -> /import (config.yaml:14)", "not reachable by the silo's uid range", "directory " + closed + " is mode 0700", "chmod o+x " + closed} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	// A directory owned by an id of the silo's block needs only the owner's
	// search bit.
	if os.Geteuid() == 0 {
		if err := os.Chown(closed, r.HostUID(0), 0); err != nil {
			t.Fatal(err)
		}
		if err := checkReachable(plan(closedSrc), r); err != nil {
			t.Errorf("0700 directory owned by the silo's root: %v", err)
		}
		os.Chown(closed, 0, r.HostUID(1000))
		os.Chmod(closed, 0o750)
		if err := checkReachable(plan(closedSrc), r); err != nil {
			t.Errorf("0750 directory whose group is the silo's: %v", err)
		}
		os.Chown(closed, 0, 0)
	}
	var st syscall.Stat_t
	if syscall.Stat(closed, &st) == nil && int(st.Uid) != os.Geteuid() {
		t.Errorf("cleanup left %s owned by %d", closed, st.Uid)
	}
}

func TestForkerRunsOnOneLockedThread(t *testing.T) {
	t.Parallel()
	l := &hostLauncher{forks: make(chan func()), closing: make(chan struct{})}
	go l.forker()
	var tids []int
	for range 20 {
		if err := l.onForker(func() { tids = append(tids, unix.Gettid()) }); err != nil {
			t.Fatal(err)
		}
		runtime.Gosched()
	}
	for _, tid := range tids {
		if tid != tids[0] {
			t.Fatalf("forks ran on threads %v, want one thread", tids)
		}
	}
	l.close()
	l.close() // idempotent
	ran := false
	if err := l.onForker(func() { ran = true }); !errors.Is(err, errLauncherClosed) || ran {
		t.Errorf("onForker after close = %v (ran %v), want errLauncherClosed", err, ran)
	}
}
