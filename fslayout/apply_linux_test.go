package fslayout

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// applyChildEnv makes the test binary a child that applies the plan in the
// file it names, probes the result and prints an applyProbe as JSON.
const applyChildEnv = "FSLAYOUT_TEST_APPLY_PLAN"

// applyTestIDBase is the host id the test's user namespace maps ns 0 to.
const applyTestIDBase = 2_100_000_000

// applyProbe is what the child reports.
type applyProbe struct {
	Err    *MountError       `json:"err,omitempty"`
	ErrMsg string            `json:"err_msg,omitempty"`
	Errno  int               `json:"errno,omitempty"`
	Root   []string          `json:"root,omitempty"`
	Writes map[string]string `json:"writes,omitempty"` // path -> "ok" or the error
	Reads  map[string]string `json:"reads,omitempty"`
	Modes  map[string]string `json:"modes,omitempty"`
	Links  map[string]string `json:"links,omitempty"`
	Mounts []string          `json:"mounts,omitempty"` // mount points and options from /proc/self/mountinfo
}

func init() {
	planFile := os.Getenv(applyChildEnv)
	if planFile == "" {
		return
	}
	runtime.LockOSThread()
	out := json.NewEncoder(os.Stdout)
	b, err := os.ReadFile(planFile)
	if err != nil {
		out.Encode(applyProbe{ErrMsg: err.Error()})
		os.Exit(0)
	}
	var req struct {
		Plan   Plan
		Root   string
		Writes []string
		Reads  []string
		Stat   []string
		Links  []string
	}
	if err := json.Unmarshal(b, &req); err != nil {
		out.Encode(applyProbe{ErrMsg: err.Error()})
		os.Exit(0)
	}
	if err := Apply(req.Plan, req.Root); err != nil {
		p := applyProbe{ErrMsg: err.Error()}
		var me *MountError
		if errors.As(err, &me) {
			p.Err = &MountError{Op: me.Op, Source: me.Source, Target: me.Target, Flags: me.Flags, Origin: me.Origin}
		}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			p.Errno = int(errno)
		}
		out.Encode(p)
		os.Exit(0)
	}
	p := applyProbe{Writes: map[string]string{}, Reads: map[string]string{}, Modes: map[string]string{}, Links: map[string]string{}}
	ents, _ := os.ReadDir("/")
	for _, e := range ents {
		p.Root = append(p.Root, e.Name())
	}
	for _, w := range req.Writes {
		if err := os.WriteFile(w, []byte("written\n"), 0o644); err != nil {
			p.Writes[w] = errnoName(err)
		} else {
			p.Writes[w] = "ok"
		}
	}
	for _, r := range req.Reads {
		if b, err := os.ReadFile(r); err != nil {
			p.Reads[r] = errnoName(err)
		} else {
			p.Reads[r] = string(b)
		}
	}
	for _, s := range req.Stat {
		if st, err := os.Lstat(s); err != nil {
			p.Modes[s] = errnoName(err)
		} else {
			p.Modes[s] = st.Mode().String()
		}
	}
	for _, l := range req.Links {
		if t, err := os.Readlink(l); err != nil {
			p.Links[l] = errnoName(err)
		} else {
			p.Links[l] = t
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(mi)), "\n") {
			f := strings.Fields(line)
			if len(f) > 5 {
				p.Mounts = append(p.Mounts, f[4]+" "+f[5])
			}
		}
	}
	out.Encode(p)
	os.Exit(0)
}

func errnoName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// applyRequest is the plan and the probes for one child.
type applyRequest struct {
	Plan   Plan
	Root   string
	Writes []string
	Reads  []string
	Stat   []string
	Links  []string
}

// sharedDir returns a temporary directory the test's unprivileged namespace
// root can traverse (t.TempDir is 0700 below a 0700 parent).
func sharedDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fslayout-apply-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// runApply runs req in a child in fresh user, mount and pid namespaces
// (ns 0..65535 mapped to applyTestIDBase..), as silo-init runs a plan.
func runApply(t *testing.T, req applyRequest) applyProbe {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the executor runs in a user namespace with a range of host uids")
	}
	dir := sharedDir(t)
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	planFile := filepath.Join(dir, "plan.json")
	if err := os.WriteFile(planFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = []string{applyChildEnv + "=" + planFile}
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: applyTestIDBase, Size: 65536}}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID,
		UidMappings:                m,
		GidMappings:                m,
		GidMappingsEnableSetgroups: true,
		Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
		Pdeathsig:                  syscall.SIGKILL,
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	var p applyProbe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("child printed %q: %v\n%s", out, err, stderr.String())
	}
	return p
}

func hostMountinfo(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplyBuildsTheRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the executor runs in a user namespace with a range of host uids")
	}
	base := sharedDir(t)
	mk := func(p string, mode fs.FileMode) string {
		full := filepath.Join(base, p)
		if err := os.MkdirAll(full, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(full, mode)
		return full
	}
	root := mk("root", 0o755)
	ro := mk("ro", 0o755)
	rw := mk("rw", 0o777)
	mk("ro/sub", 0o755) // existing mount point inside the ro bind
	nested := mk("nested", 0o755)
	if err := os.WriteFile(filepath.Join(ro, "file.txt"), []byte("host file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nested, "n.txt"), []byte("nested\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := Plan{Ops: []MountOp{
		{Kind: OpTmpfs, Target: "/tmp", Data: "mode=1777", Flags: NoSuid | NoDev},
		{Kind: OpProc, Target: "/proc"},
		{Kind: OpDev, Source: "/dev/null", Target: "/dev/null"},
		{Kind: OpFile, Target: "/etc/passwd", Content: []byte("postgres:x:1000:1000::/:/x\n"), Mode: 0o640},
		{Kind: OpSymlink, Source: "usr/lib", Target: "/lib"},
		{Kind: OpDir, Target: "/var/empty", Mode: 0o700},
		{Kind: OpBind, Source: ro, Target: "/usr/lib", ReadOnly: true, Origin: "test: ro"},
		{Kind: OpBind, Source: nested, Target: "/usr/lib/sub", ReadOnly: true, Origin: "test: nested"},
		{Kind: OpBind, Source: rw, Target: "/data", Origin: "test: rw"},
	}}
	before := hostMountinfo(t)
	p := runApply(t, applyRequest{
		Plan:   plan,
		Root:   root,
		Writes: []string{"/data/out", "/usr/lib/new", "/usr/lib/sub/new", "/new", "/etc/passwd", "/tmp/ok", "/dev/null"},
		Reads:  []string{"/usr/lib/file.txt", "/lib/file.txt", "/usr/lib/sub/n.txt", "/etc/passwd", filepath.Join(ro, "file.txt")},
		Stat:   []string{"/etc/passwd", "/var/empty", "/tmp", base},
		Links:  []string{"/lib"},
	})
	if p.ErrMsg != "" {
		t.Fatalf("Apply failed: %s", p.ErrMsg)
	}
	sort.Strings(p.Root)
	if want := []string{"data", "dev", "etc", "lib", "proc", "tmp", "usr", "var"}; !slices.Equal(p.Root, want) {
		t.Errorf("/ holds %q, want %q", p.Root, want)
	}
	wantWrites := map[string]string{
		"/data/out":        "ok",
		"/usr/lib/new":     "EROFS",
		"/usr/lib/sub/new": "EROFS", // the nested ro bind
		"/new":             "EROFS", // the root tmpfs is read-only once entered
		"/etc/passwd":      "EROFS",
		"/tmp/ok":          "ok",
		"/dev/null":        "ok",
	}
	for w, want := range wantWrites {
		if got := p.Writes[w]; got != want {
			t.Errorf("write %s: %s, want %s", w, got, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("the rw bind's host side: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file appeared in the ro source: %v", err)
	}
	wantReads := map[string]string{
		"/usr/lib/file.txt":           "host file\n",
		"/lib/file.txt":               "host file\n",
		"/usr/lib/sub/n.txt":          "nested\n",
		"/etc/passwd":                 "postgres:x:1000:1000::/:/x\n",
		filepath.Join(ro, "file.txt"): "ENOENT", // the host's tree is gone
	}
	for r, want := range wantReads {
		if got := p.Reads[r]; got != want {
			t.Errorf("read %s: %q, want %q", r, got, want)
		}
	}
	wantModes := map[string]string{"/etc/passwd": "-rw-r-----", "/var/empty": "drwx------", "/tmp": "dtrwxrwxrwx", base: "ENOENT"}
	for s, want := range wantModes {
		if got := p.Modes[s]; got != want {
			t.Errorf("stat %s: %s, want %s", s, got, want)
		}
	}
	if got := p.Links["/lib"]; got != "usr/lib" {
		t.Errorf("/lib -> %q, want usr/lib", got)
	}
	var rootOpts string
	for _, m := range p.Mounts {
		if strings.HasPrefix(m, "/ ") {
			rootOpts = m
		}
	}
	if !strings.Contains(rootOpts, "ro") || !strings.Contains(rootOpts, "nosuid") {
		t.Errorf("the root mount is %q, want ro,nosuid", rootOpts)
	}
	if after := hostMountinfo(t); after != before {
		t.Errorf("the host's mount table changed")
	}
}

func TestApplyReportsFailures(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the executor runs in a user namespace with a range of host uids")
	}
	base := sharedDir(t)
	root := filepath.Join(base, "root")
	src := filepath.Join(base, "src")
	for _, d := range []string{root, src} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	closed := filepath.Join(base, "closed")
	if err := os.MkdirAll(filepath.Join(closed, "inner"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(closed, 0o700) // root-owned: the namespace's root may not enter
	cases := []struct {
		name   string
		ops    []MountOp
		op     string
		target string
		errno  syscall.Errno
		msg    string
	}{
		{
			name:   "missing source",
			ops:    []MountOp{{Kind: OpBind, Source: filepath.Join(base, "missing"), Target: "/import", ReadOnly: true, Origin: "config.yaml:14"}},
			op:     "bind",
			target: "/import",
			errno:  syscall.ENOENT,
			msg:    "bind " + filepath.Join(base, "missing") + " -> /import (config.yaml:14): no such file or directory",
		},
		{
			name:   "unreachable source",
			ops:    []MountOp{{Kind: OpBind, Source: filepath.Join(closed, "inner"), Target: "/x", Origin: "config.yaml:20"}},
			op:     "bind",
			target: "/x",
			errno:  syscall.EACCES,
		},
		{
			name: "mount point missing inside a bind",
			ops: []MountOp{
				{Kind: OpBind, Source: src, Target: "/srv", Origin: "test: srv"},
				{Kind: OpBind, Source: src, Target: "/srv/not-there/deeper", Origin: "test: inner"},
			},
			op:     "bind",
			target: "/srv/not-there/deeper",
			msg:    "is not created because its parent directory is a host directory bound into the silo",
		},
		{
			name:   "dev that is not a device",
			ops:    []MountOp{{Kind: OpDev, Source: src, Target: "/dev/null", Origin: "test: dev"}},
			op:     "dev",
			target: "/dev/null",
			msg:    "not a character device",
		},
		{
			name:   "file inside a bind",
			ops:    []MountOp{{Kind: OpBind, Source: src, Target: "/srv"}, {Kind: OpFile, Target: "/srv/file", Content: []byte("x")}},
			op:     "file",
			target: "/srv/file",
			msg:    "host directory bound into the silo",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := runApply(t, applyRequest{Plan: Plan{Ops: tc.ops}, Root: root})
			if p.Err == nil {
				t.Fatalf("Apply succeeded or failed without a MountError: %+v", p)
			}
			if p.Err.Op != tc.op || p.Err.Target != tc.target {
				t.Errorf("MountError %+v, want op %s target %s", p.Err, tc.op, tc.target)
			}
			if tc.errno != 0 && syscall.Errno(p.Errno) != tc.errno {
				t.Errorf("errno %d (%s), want %s", p.Errno, p.ErrMsg, tc.errno)
			}
			if tc.msg != "" && !strings.Contains(p.ErrMsg, tc.msg) {
				t.Errorf("message %q lacks %q", p.ErrMsg, tc.msg)
			}
		})
	}
	// Nothing was created on the host side of the bind.
	if ents, _ := os.ReadDir(src); len(ents) != 0 {
		t.Errorf("the executor created %v in a bind source", ents)
	}
}
