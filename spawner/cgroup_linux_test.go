package spawner

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/silo-proxy/silo-proxy/config"
)

// cgroupFakeFS models the kernel rules that cgroup v2 delegation depends on,
// so the v2 path (production hosts) is tested on v1/v2 hybrid CI hosts:
//   - cgroup.controllers of a child lists what its parent enabled in
//     cgroup.subtree_control; the root offers everything in offered;
//   - enabling a controller in subtree_control of a non-root cgroup that
//     holds processes fails with EBUSY, and so does adding a process to a
//     non-root cgroup that has controllers enabled for its children;
//   - a controller's interface files exist only where the controller is
//     enabled (ENOENT otherwise);
//   - rmdir of a cgroup with children or processes fails with EBUSY.
//
// Directories below a path in v1 behave as v1 hierarchies: every file is
// writable and no delegation rule applies.
type cgroupFakeFS struct {
	mu      sync.Mutex
	root    string
	offered []string
	v1      []string
	dirs    map[string]*cgroupFakeDir
	files   map[string]string
	ppids   map[int]int
	fail    map[string]error // "path=value" or path → error returned by writeFile
	writes  []string         // "path=value", in order
}

type cgroupFakeDir struct {
	subtree []string
	procs   []int
}

func newCgroupFakeFS(root string, offered []string, v1 ...string) *cgroupFakeFS {
	f := &cgroupFakeFS{root: root, offered: offered, v1: v1,
		dirs: map[string]*cgroupFakeDir{}, files: map[string]string{}, ppids: map[int]int{}, fail: map[string]error{}}
	for _, d := range append([]string{root}, v1...) {
		f.dirs[d] = &cgroupFakeDir{}
	}
	return f
}

func (f *cgroupFakeFS) isV1(p string) bool {
	for _, r := range f.v1 {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// controllers is cgroup.controllers of dir.
func (f *cgroupFakeFS) controllers(dir string) []string {
	if dir == f.root {
		return f.offered
	}
	if parent, ok := f.dirs[filepath.Dir(dir)]; ok {
		return parent.subtree
	}
	return nil
}

func (f *cgroupFakeFS) addDir(dir string, procs ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dirs[dir] = &cgroupFakeDir{procs: procs}
}

func (f *cgroupFakeFS) readFile(p string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir, name := filepath.Split(p)
	dir = filepath.Clean(dir)
	cg, ok := f.dirs[dir]
	if !ok {
		return nil, &os.PathError{Op: "open", Path: p, Err: unix.ENOENT}
	}
	switch name {
	case "cgroup.controllers":
		return []byte(strings.Join(f.controllers(dir), " ") + "\n"), nil
	case "cgroup.subtree_control":
		return []byte(strings.Join(cg.subtree, " ") + "\n"), nil
	case "cgroup.procs":
		var b strings.Builder
		for _, pid := range cg.procs {
			fmt.Fprintln(&b, pid)
		}
		return []byte(b.String()), nil
	}
	if v, ok := f.files[p]; ok {
		return []byte(v + "\n"), nil
	}
	return nil, &os.PathError{Op: "open", Path: p, Err: unix.ENOENT}
}

func (f *cgroupFakeFS) writeFile(p, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, key := range []string{p + "=" + value, p} {
		if err := f.fail[key]; err != nil {
			return &os.PathError{Op: "write", Path: p, Err: err}
		}
	}
	dir, name := filepath.Split(p)
	dir = filepath.Clean(dir)
	cg, ok := f.dirs[dir]
	if !ok {
		return &os.PathError{Op: "open", Path: p, Err: unix.ENOENT}
	}
	fail := func(e error) error { return &os.PathError{Op: "write", Path: p, Err: e} }
	switch {
	case name == "cgroup.subtree_control":
		ctrl, ok := strings.CutPrefix(value, "+")
		if !ok || !slices.Contains(f.controllers(dir), ctrl) {
			return fail(unix.ENOENT)
		}
		if dir != f.root && len(cg.procs) > 0 {
			return fail(unix.EBUSY)
		}
		if !slices.Contains(cg.subtree, ctrl) {
			cg.subtree = append(cg.subtree, ctrl)
		}
	case name == "cgroup.procs":
		pid, err := strconv.Atoi(value)
		if err != nil {
			return fail(unix.EINVAL)
		}
		if !f.isV1(dir) && dir != f.root && len(cg.subtree) > 0 {
			return fail(unix.EBUSY)
		}
		for d, other := range f.dirs {
			if f.isV1(d) == f.isV1(dir) {
				other.procs = slices.DeleteFunc(other.procs, func(x int) bool { return x == pid })
			}
		}
		cg.procs = append(cg.procs, pid)
	default:
		ctrl, _, _ := strings.Cut(name, ".")
		if !f.isV1(dir) && !slices.Contains(f.controllers(dir), ctrl) {
			return fail(unix.ENOENT)
		}
		f.files[p] = value
	}
	f.writes = append(f.writes, p+"="+value)
	return nil
}

func (f *cgroupFakeFS) mkdir(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.dirs[p]; ok {
		return &os.PathError{Op: "mkdir", Path: p, Err: unix.EEXIST}
	}
	if _, ok := f.dirs[filepath.Dir(p)]; !ok {
		return &os.PathError{Op: "mkdir", Path: p, Err: unix.ENOENT}
	}
	f.dirs[p] = &cgroupFakeDir{}
	return nil
}

func (f *cgroupFakeFS) rmdir(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cg, ok := f.dirs[p]
	if !ok {
		return &os.PathError{Op: "rmdir", Path: p, Err: unix.ENOENT}
	}
	if len(cg.procs) > 0 {
		return &os.PathError{Op: "rmdir", Path: p, Err: unix.EBUSY}
	}
	for d := range f.dirs {
		if filepath.Dir(d) == p {
			return &os.PathError{Op: "rmdir", Path: p, Err: unix.EBUSY}
		}
	}
	delete(f.dirs, p)
	return nil
}

func (f *cgroupFakeFS) subdirs(p string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.dirs[p]; !ok {
		return nil, &os.PathError{Op: "open", Path: p, Err: unix.ENOENT}
	}
	var names []string
	for d := range f.dirs {
		if filepath.Dir(d) == p {
			names = append(names, filepath.Base(d))
		}
	}
	slices.Sort(names)
	return names, nil
}

func (f *cgroupFakeFS) ppid(pid int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pp, ok := f.ppids[pid]; ok {
		return pp, nil
	}
	return 0, &os.PathError{Op: "open", Path: "/proc/" + strconv.Itoa(pid) + "/stat", Err: unix.ENOENT}
}

func (f *cgroupFakeFS) exists(p string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.dirs[p]
	return ok
}

func (f *cgroupFakeFS) procsOf(p string) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if cg, ok := f.dirs[p]; ok {
		return slices.Clone(cg.procs)
	}
	return nil
}

// cgroupLogBuffer is a concurrency-safe sink for a test's slog output.
type cgroupLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *cgroupLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *cgroupLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func cgroupTestLogger(t testing.TB) (*slog.Logger, *cgroupLogBuffer) {
	t.Helper()
	buf := &cgroupLogBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

const cgroupFakeSelf = 4242

func cgroupFakeHost(f *cgroupFakeFS, layout cgroupLayout) *cgroupHost {
	return &cgroupHost{fs: f, self: cgroupFakeSelf, settle: 10 * time.Millisecond,
		discover: func() (cgroupLayout, error) { return layout, nil }}
}

func TestCgroupV2Delegation(t *testing.T) {
	t.Parallel()
	all := []string{"cpu", "io", "memory", "pids"}
	lim := config.Limits{MemoryBytes: 256 << 20, CPU: 0.5, Pids: 64}
	const instance = "/var/lib/silo-proxy"
	base := cgroupInstanceDir(instance)

	t.Run("root cgroup needs no move", func(t *testing.T) {
		t.Parallel()
		f := newCgroupFakeFS("/cg", all)
		f.addDir("/cg", cgroupFakeSelf, 1)
		h := cgroupFakeHost(f, cgroupLayout{V2Dir: "/cg"})
		log, _ := cgroupTestLogger(t)
		c, err := h.create(instance, "sales", lim, log)
		if err != nil {
			t.Fatal(err)
		}
		leaf := "/cg/" + base + "/sales"
		for _, ctrl := range []string{cgroupMemory, cgroupCPU, cgroupPids} {
			if c.ctrl[ctrl] != leaf {
				t.Errorf("%s on %q, want the v2 leaf %s", ctrl, c.ctrl[ctrl], leaf)
			}
		}
		if _, ok := c.ctrl[cgroupCPUAcct]; ok {
			t.Error("cpuacct used although cpu is on v2")
		}
		for file, want := range map[string]string{"memory.max": "268435456", "cpu.max": "50000 100000", "pids.max": "64"} {
			if got := f.files[leaf+"/"+file]; got != want {
				t.Errorf("%s = %q, want %q", file, got, want)
			}
		}
		if f.exists("/cg/supervisor") {
			t.Error("moved into a supervisor cgroup although the own cgroup is the root")
		}
	})

	t.Run("delegated unit moves the proxy into supervisor", func(t *testing.T) {
		t.Parallel()
		const unit = "/cg/system.slice/silo-proxy.service"
		f := newCgroupFakeFS("/cg", all)
		f.addDir("/cg/system.slice")
		f.dirs["/cg"].subtree = all
		f.dirs["/cg/system.slice"].subtree = all
		f.addDir(unit, cgroupFakeSelf, 77)
		f.ppids[77] = cgroupFakeSelf // a silo-init started before the first cgroup
		h := cgroupFakeHost(f, cgroupLayout{V2Dir: unit})
		log, logs := cgroupTestLogger(t)
		c, err := h.create(instance, "sales", lim, log)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.procsOf(unit + "/supervisor"); !slices.Equal(got, []int{cgroupFakeSelf, 77}) {
			t.Errorf("supervisor holds %v, want the proxy then its child", got)
		}
		if got := f.procsOf(unit); len(got) != 0 {
			t.Errorf("own cgroup still holds %v", got)
		}
		if c.ctrl[cgroupMemory] != unit+"/"+base+"/sales" {
			t.Errorf("memory on %q", c.ctrl[cgroupMemory])
		}
		if !strings.Contains(logs.String(), "moved silo-proxy into a leaf cgroup") {
			t.Errorf("the move was not logged:\n%s", logs)
		}
		if err := c.addProcess(9001); err != nil {
			t.Fatal(err)
		}
		if got := f.procsOf(unit + "/" + base + "/sales"); !slices.Equal(got, []int{9001}) {
			t.Errorf("silo leaf holds %v", got)
		}

		// A second silo reuses the delegation; the proxy is not moved twice.
		writes := len(f.writes)
		c2, err := h.create(instance, "hr", config.Limits{}, log)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range f.writes[writes:] {
			if strings.Contains(w, "supervisor") || strings.Contains(w, "subtree_control") {
				t.Errorf("second silo repeated delegation: %s", w)
			}
		}
		if got := f.files[unit+"/"+base+"/hr/memory.max"]; got != "max" {
			t.Errorf("unset memory limit written as %q, want max", got)
		}

		// destroy: the busy leaf is reported and kept; the base survives
		// while a silo still uses it.
		if err := c.destroy(); !errors.Is(err, errCgroupBusy) {
			t.Fatalf("destroy with a task inside: %v, want errCgroupBusy", err)
		}
		if !f.exists(unit + "/" + base + "/sales") {
			t.Fatal("busy leaf removed")
		}
		f.mu.Lock()
		f.dirs[unit+"/"+base+"/sales"].procs = nil // the task exited
		f.mu.Unlock()
		if err := c.destroy(); err != nil {
			t.Fatal(err)
		}
		if f.exists(unit+"/"+base+"/sales") || !f.exists(unit+"/"+base) {
			t.Error("want the sales leaf gone and the base kept for hr")
		}
		if err := c2.destroy(); err != nil {
			t.Fatal(err)
		}
		if f.exists(unit + "/" + base) {
			t.Error("base left behind after the last silo")
		}
		if !f.exists(unit + "/supervisor") {
			t.Error("destroy removed the supervisor cgroup the proxy lives in")
		}
	})

	t.Run("foreign process blocks the move; v1 takes over", func(t *testing.T) {
		t.Parallel()
		const own = "/cg/user.slice/session-1.scope"
		f := newCgroupFakeFS("/cg", all, "/v1/memory")
		f.addDir("/cg/user.slice")
		f.dirs["/cg"].subtree = all
		f.dirs["/cg/user.slice"].subtree = all
		f.addDir(own, cgroupFakeSelf, 500) // 500: the operator's shell
		f.ppids[500] = 1
		h := cgroupFakeHost(f, cgroupLayout{V2Dir: own, V1Dirs: map[string]string{cgroupMemory: "/v1/memory"}})
		log, logs := cgroupTestLogger(t)
		c, err := h.create(instance, "sales", lim, log)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.procsOf(own); !slices.Contains(got, 500) || !slices.Contains(got, cgroupFakeSelf) {
			t.Errorf("own cgroup now holds %v: a process was moved", got)
		}
		if f.exists(own + "/supervisor") {
			t.Error("supervisor created although the move was refused")
		}
		if c.ctrl[cgroupMemory] != "/v1/memory/"+base+"/sales" {
			t.Errorf("memory on %q, want the v1 leaf", c.ctrl[cgroupMemory])
		}
		if got := f.files["/v1/memory/"+base+"/sales/memory.limit_in_bytes"]; got != "268435456" {
			t.Errorf("v1 memory limit = %q", got)
		}
		if c.v2 != own+"/"+base+"/sales" {
			t.Errorf("no v2 leaf for membership: %q", c.v2)
		}
		out := logs.String()
		for _, ctrl := range []string{"cpu", "pids"} {
			if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "controller="+ctrl) {
				t.Errorf("no warning for the unenforced %s limit:\n%s", ctrl, out)
			}
		}
		if !strings.Contains(out, "did not start") {
			t.Errorf("the warning does not say why v2 was refused:\n%s", out)
		}
		if strings.Contains(out, "controller=memory") {
			t.Errorf("warned about memory although v1 enforces it:\n%s", out)
		}
	})

	t.Run("controller not offered", func(t *testing.T) {
		t.Parallel()
		f := newCgroupFakeFS("/cg", []string{"hugetlb"})
		h := cgroupFakeHost(f, cgroupLayout{V2Dir: "/cg"})
		log, logs := cgroupTestLogger(t)
		c, err := h.create(instance, "sales", config.Limits{Pids: 10}, log)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.ctrl) != 0 {
			t.Errorf("controllers %v resolved on a host offering none", c.ctrl)
		}
		if out := logs.String(); !strings.Contains(out, "controller=pids") || strings.Contains(out, "controller=memory") {
			t.Errorf("want one warning, for pids only:\n%s", out)
		}
		// cpu.stat is core on v2: usage still reports cpu time.
		f.files[c.v2+"/cpu.stat"] = "usage_usec 1500000\nuser_usec 1000000"
		u, ok := c.usage()
		if !ok || u.CPUSeconds != 1.5 {
			t.Errorf("usage = %+v, %v; want 1.5 cpu seconds", u, ok)
		}
	})

	t.Run("v1 cpu quota above the parent's", func(t *testing.T) {
		t.Parallel()
		f := newCgroupFakeFS("/cg", nil, "/v1/cpu")
		leaf := "/v1/cpu/" + base + "/sales"
		f.fail[leaf+"/cpu.cfs_quota_us=400000"] = unix.EINVAL
		h := cgroupFakeHost(f, cgroupLayout{V1Dirs: map[string]string{cgroupCPU: "/v1/cpu"}})
		log, logs := cgroupTestLogger(t)
		c, err := h.create(instance, "sales", config.Limits{CPU: 4}, log)
		if err != nil {
			t.Fatalf("create = %v, want the silo to run under the parent's quota", err)
		}
		if c.ctrl[cgroupCPU] != leaf {
			t.Errorf("cpu on %q", c.ctrl[cgroupCPU])
		}
		if !strings.Contains(logs.String(), "exceeds the quota") {
			t.Errorf("no warning:\n%s", logs)
		}
		if got := f.files[leaf+"/cpu.cfs_quota_us"]; got != "-1" {
			t.Errorf("quota = %q, want -1 (the parent's quota bounds the silo)", got)
		}
		// Any other failure still refuses the silo.
		f.fail[leaf+"/cpu.cfs_quota_us=400000"] = unix.EACCES
		if _, err := h.create(instance, "sales", config.Limits{CPU: 4}, log); !errors.Is(err, unix.EACCES) {
			t.Errorf("create with EACCES on the quota = %v", err)
		}
	})

	t.Run("failed limit write leaves nothing", func(t *testing.T) {
		t.Parallel()
		f := newCgroupFakeFS("/cg", all)
		leaf := "/cg/" + base + "/sales"
		f.fail[leaf+"/pids.max"] = unix.EINVAL
		h := cgroupFakeHost(f, cgroupLayout{V2Dir: "/cg"})
		log, _ := cgroupTestLogger(t)
		if _, err := h.create(instance, "sales", lim, log); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("create = %v, want the EINVAL of the pids write", err)
		}
		if f.exists(leaf) || f.exists("/cg/"+base) {
			t.Error("directories left behind by a failed create")
		}
	})
}

// TestCgroupSweep: leftovers of a killed run of the same instance go, busy
// ones and those of running silos stay, other instances are not touched.
// TestCgroupCPUOnlyForALimit: without a cpu limit a silo joins no cpu
// controller (neither v2's cpu, enabled in no subtree_control, nor a v1 cpu
// hierarchy), so its backends are scheduled like a plain postmaster's; CPU
// time is still accounted through cpuacct or cpu.stat.
func TestCgroupCPUOnlyForALimit(t *testing.T) {
	t.Parallel()
	const instance = "/var/lib/silo-proxy"
	base := cgroupInstanceDir(instance)
	for _, tc := range []struct {
		name    string
		cpu     float64
		wantCPU bool
	}{{"no limit", 0, false}, {"limit", 0.5, true}} {
		t.Run("v2 "+tc.name, func(t *testing.T) {
			t.Parallel()
			f := newCgroupFakeFS("/cg", []string{"cpu", "memory", "pids"})
			f.addDir("/cg", cgroupFakeSelf, 1)
			h := cgroupFakeHost(f, cgroupLayout{V2Dir: "/cg"})
			log, _ := cgroupTestLogger(t)
			c, err := h.create(instance, "sales", config.Limits{CPU: tc.cpu, Pids: 10}, log)
			if err != nil {
				t.Fatal(err)
			}
			_, got := c.ctrl[cgroupCPU]
			enabled := slices.Contains(f.dirs["/cg/"+base].subtree, "cpu")
			if got != tc.wantCPU || enabled != tc.wantCPU {
				t.Errorf("cpu controller used = %v, enabled below the instance = %v; want %v", got, enabled, tc.wantCPU)
			}
			if c.ctrl[cgroupPids] == "" || c.ctrl[cgroupMemory] == "" {
				t.Errorf("memory and pids must always be joined: %v", c.ctrl)
			}
		})
		t.Run("v1 "+tc.name, func(t *testing.T) {
			t.Parallel()
			f := newCgroupFakeFS("/cg", nil, "/v1/cpu", "/v1/cpuacct", "/v1/pids", "/v1/memory")
			h := cgroupFakeHost(f, cgroupLayout{V1Dirs: map[string]string{
				cgroupCPU: "/v1/cpu", cgroupCPUAcct: "/v1/cpuacct", cgroupPids: "/v1/pids", cgroupMemory: "/v1/memory"}})
			log, _ := cgroupTestLogger(t)
			c, err := h.create(instance, "sales", config.Limits{CPU: tc.cpu}, log)
			if err != nil {
				t.Fatal(err)
			}
			_, got := c.ctrl[cgroupCPU]
			if got != tc.wantCPU || f.exists("/v1/cpu/"+base+"/sales") != tc.wantCPU {
				t.Errorf("v1 cpu cgroup used = %v, want %v", got, tc.wantCPU)
			}
			if c.ctrl[cgroupCPUAcct] != "/v1/cpuacct/"+base+"/sales" {
				t.Errorf("cpuacct on %q, want its own leaf for accounting", c.ctrl[cgroupCPUAcct])
			}
		})
	}
}

func TestCgroupSweep(t *testing.T) {
	t.Parallel()
	const instance = "/var/lib/silo-proxy"
	base, other := cgroupInstanceDir(instance), cgroupInstanceDir("/srv/other-proxy")
	f := newCgroupFakeFS("/cg", []string{"memory", "pids"}, "/v1/cpu")
	for _, d := range []string{"/cg/" + base, "/cg/" + base + "/gone", "/cg/" + base + "/busy",
		"/v1/cpu/" + base, "/v1/cpu/" + base + "/gone", "/cg/" + other, "/cg/" + other + "/x"} {
		f.addDir(d)
	}
	f.dirs["/cg/"+base+"/busy"].procs = []int{321}
	h := cgroupFakeHost(f, cgroupLayout{V2Dir: "/cg", V1Dirs: map[string]string{cgroupCPU: "/v1/cpu"}})
	log, logs := cgroupTestLogger(t)
	running, err := h.create(instance, "running", config.Limits{CPU: 0.5}, log)
	if err != nil {
		t.Fatal(err)
	}
	remaining, err := h.sweep(instance, log)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(remaining)
	wantLeft := []string{"/cg/" + base, "/cg/" + base + "/busy", "/cg/" + base + "/running",
		"/v1/cpu/" + base, "/v1/cpu/" + base + "/running"}
	if !slices.Equal(remaining, wantLeft) {
		t.Errorf("sweep reports %q remaining, want %q", remaining, wantLeft)
	}
	for dir, want := range map[string]bool{
		"/cg/" + base + "/gone":     false,
		"/v1/cpu/" + base + "/gone": false,
		"/cg/" + base + "/busy":     true,
		"/cg/" + base + "/running":  true,
		"/cg/" + base:               true,
		"/cg/" + other + "/x":       true,
	} {
		if f.exists(dir) != want {
			t.Errorf("%s exists = %v, want %v", dir, !want, want)
		}
	}
	if !strings.Contains(logs.String(), "still has tasks") {
		t.Errorf("the busy leftover was not reported:\n%s", logs)
	}
	// Once the running silo is destroyed and the busy task gone, a later
	// sweep removes the rest, base included.
	if err := running.destroy(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.dirs["/cg/"+base+"/busy"].procs = nil
	f.mu.Unlock()
	remaining, err = h.sweep(instance, log)
	if err != nil {
		t.Fatal(err)
	}
	if f.exists("/cg/"+base) || f.exists("/v1/cpu/"+base) || len(remaining) != 0 {
		t.Errorf("the instance directories survived an empty sweep (reported remaining: %q)", remaining)
	}
}

func TestCgroupUsageSources(t *testing.T) {
	t.Parallel()
	f := newCgroupFakeFS("/cg", nil, "/v1")
	for _, d := range []string{"/v1/memory", "/v1/cpuacct", "/v1/pids"} {
		f.addDir(d)
	}
	h := cgroupFakeHost(f, cgroupLayout{V1Dirs: map[string]string{
		cgroupMemory: "/v1/memory", cgroupCPUAcct: "/v1/cpuacct", cgroupPids: "/v1/pids"}})
	log, _ := cgroupTestLogger(t)
	c, err := h.create("x", "s", config.Limits{}, log)
	if err != nil {
		t.Fatal(err)
	}
	base := cgroupInstanceDir("x")
	f.files["/v1/memory/"+base+"/s/memory.usage_in_bytes"] = "1048576"
	f.files["/v1/cpuacct/"+base+"/s/cpuacct.usage"] = "2500000000"
	f.files["/v1/pids/"+base+"/s/pids.current"] = "7"
	u, ok := c.usage()
	want := Usage{MemoryBytes: 1 << 20, CPUSeconds: 2.5, Pids: 7}
	if !ok || u != want {
		t.Errorf("usage = %+v, %v; want %+v", u, ok, want)
	}
	var nilCgroup *cgroup
	if _, ok := nilCgroup.usage(); ok {
		t.Error("a nil cgroup reported usage")
	}
	if nilCgroup.addProcess(1) != nil || nilCgroup.destroy() != nil {
		t.Error("nil cgroup methods must be no-ops")
	}
}

// cgroupHogEnv makes the test binary a child that waits on stdin until the
// test has put it into a cgroup, then touches memory and burns cpu time
// there so that usage has something to count.
const cgroupHogEnv = "SILO_TEST_CGROUP_HOG"

func init() {
	if os.Getenv(cgroupHogEnv) != "1" {
		return
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadByte(); err != nil {
		os.Exit(3)
	}
	mem := make([]byte, 64<<20)
	for i := 0; i < len(mem); i += 4096 {
		mem[i] = 1
	}
	var ru unix.Rusage
	for x := 0; ; x++ {
		if x%1000000 == 0 {
			_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
			if ru.Utime.Nano()+ru.Stime.Nano() >= int64(100*time.Millisecond) {
				break
			}
		}
	}
	fmt.Println("ready", mem[4096])
	_, _ = io.Copy(io.Discard, in) // until the test closes stdin or kills us
	os.Exit(0)
}

func cgroupNeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// TestCgroupOnHost runs the real thing below the test process's own
// cgroups: limits read back as written, a child counts in usage, destroy
// refuses (and kills nothing) while the child lives, then removes every
// directory.
func TestCgroupOnHost(t *testing.T) {
	cgroupNeedRoot(t)
	lim := config.Limits{MemoryBytes: 256 << 20, CPU: 0.5, Pids: 64}
	log, logs := cgroupTestLogger(t)
	c, err := createCgroup(t.TempDir(), "escape-test", lim, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.leaves) == 0 {
		t.Skipf("no writable cgroup hierarchy on this host:\n%s", logs)
	}
	t.Cleanup(func() { _ = c.destroy() })

	want := map[string]map[bool]map[string]string{
		cgroupMemory: {true: {"memory.max": "268435456"}, false: {"memory.limit_in_bytes": "268435456"}},
		cgroupCPU:    {true: {"cpu.max": "50000 100000"}, false: {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"}},
		cgroupPids:   {true: {"pids.max": "64"}, false: {"pids.max": "64"}},
	}
	for ctrl, byVersion := range want {
		dir, ok := c.ctrl[ctrl]
		if !ok {
			if !strings.Contains(logs.String(), "controller="+ctrl) {
				t.Errorf("%s unavailable and not warned about:\n%s", ctrl, logs)
			}
			continue
		}
		for file, v := range byVersion[dir == c.v2] {
			b, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(b)); got != v {
				t.Errorf("%s/%s = %q, want %q", dir, file, got, v)
			}
		}
	}

	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), cgroupHogEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	if err := c.addProcess(pid); err != nil {
		t.Fatal(err)
	}
	for _, dir := range c.leaves {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			t.Fatal(err)
		}
		if pids, _ := cgroupParsePids(b); !slices.Contains(pids, pid) {
			t.Errorf("%s holds %v, not the child %d", dir, pids, pid)
		}
	}
	if _, err := stdin.Write([]byte{'\n'}); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("child: %q, %v", line, err)
	}

	u, ok := c.usage()
	if !ok {
		t.Fatal("usage unavailable")
	}
	t.Logf("usage: %+v", u)
	if _, has := c.ctrl[cgroupMemory]; has && u.MemoryBytes < 32<<20 {
		t.Errorf("memory %d bytes, the child touched 64 MiB inside the cgroup", u.MemoryBytes)
	}
	if u.CPUSeconds < 0.05 || u.CPUSeconds > 3600 {
		t.Errorf("cpu %.3f s, the child burned at least 0.1 s inside the cgroup", u.CPUSeconds)
	}
	if _, has := c.ctrl[cgroupPids]; has && u.Pids < 1 {
		t.Errorf("pids %d with a live child inside", u.Pids)
	}

	if testing.Short() {
		kill()
	} else {
		err = c.destroy()
		if !errors.Is(err, errCgroupBusy) || !strings.Contains(err.Error(), strconv.Itoa(pid)) {
			t.Errorf("destroy with a live task = %v, want errCgroupBusy naming pid %d", err, pid)
		}
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("destroy harmed the task it found: %v", err)
		}
		kill()
	}
	if err := c.destroy(); err != nil {
		t.Fatal(err)
	}
	for _, dir := range append(slices.Clone(c.leaves), c.bases...) {
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still exists after destroy (%v)", dir, err)
		}
	}
}
