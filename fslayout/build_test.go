package fslayout

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/silo-proxy/silo-proxy/config"
)

// hostSpec is a spec for the host installation with fresh data and socket
// directories.
func hostSpec(t testing.TB, layout config.Layout, bootstrap bool) Spec {
	t.Helper()
	inst := needInstall(t)
	return Spec{
		Silo:      "test",
		Layout:    layout,
		Install:   inst,
		DataDir:   filepath.Join(t.TempDir(), "data"),
		SocketDir: filepath.Join(t.TempDir(), "run"),
		Bootstrap: bootstrap,
	}
}

func mustBuild(t testing.TB, spec Spec) Plan {
	t.Helper()
	p, err := Build(spec)
	if err != nil {
		t.Fatalf("Build(%s, bootstrap=%v): %v", spec.Layout, spec.Bootstrap, err)
	}
	return p
}

// opAt returns the last op at target.
func opAt(p Plan, target string) (MountOp, bool) {
	var found MountOp
	ok := false
	for _, op := range p.Ops {
		if op.Target == target {
			found, ok = op, true
		}
	}
	return found, ok
}

// shellPaths are the paths issue 2 requires minimal to lack.
var shellPaths = []string{"/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", "/bin/dash", "/usr/bin/dash"}

// resolvesTo checks that silo path p leads to the host file real.
func resolvesTo(t *testing.T, p Plan, siloPath, real string) {
	t.Helper()
	r, err := p.Resolve(siloPath)
	if err != nil {
		t.Errorf("%s does not resolve in the silo: %v", siloPath, err)
		return
	}
	got, err := filepath.EvalSymlinks(r.HostPath)
	if err != nil || got != real {
		t.Errorf("%s resolves to host %s (%s), want %s", siloPath, r.HostPath, got, real)
	}
}

func TestBuildMinimalShape(t *testing.T) {
	t.Parallel()
	spec := hostSpec(t, config.LayoutMinimal, false)
	p := mustBuild(t, spec)
	inst := spec.Install

	for _, d := range []string{inst.BinDir, inst.PkgLibDir, inst.ShareDir} {
		real, _ := filepath.EvalSymlinks(d)
		resolvesTo(t, p, d, real)
		if r, err := p.Resolve(d); err == nil && !r.Op.ReadOnly {
			t.Errorf("%s is not read-only: %+v", d, r.Op)
		}
	}
	resolvesTo(t, p, inst.Postmaster(), mustReal(t, inst.Postmaster()))

	// The loader and libc at the paths the loader itself uses.
	f, err := elf.Open(inst.Postmaster())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				t.Fatal(err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			resolvesTo(t, p, interp, mustReal(t, interp))
		}
	}
	c, err := LibraryClosure([]string{inst.Postmaster()})
	if err != nil {
		t.Fatal(err)
	}
	var sawLibc bool
	for _, l := range c.Libraries {
		if l.Soname == "libc.so.6" {
			sawLibc = true
			resolvesTo(t, p, l.Path, l.RealPath)
		}
	}
	if !sawLibc {
		t.Error("postmaster closure has no libc.so.6")
	}

	want := map[string]OpKind{
		"/proc": OpProc, "/dev/null": OpDev, "/dev/zero": OpDev, "/dev/full": OpDev, "/dev/random": OpDev, "/dev/urandom": OpDev,
		"/dev/shm": OpTmpfs, "/tmp": OpTmpfs, "/etc/passwd": OpFile, "/etc/group": OpFile, "/etc/nsswitch.conf": OpFile,
		DataTarget: OpBind, SocketTarget: OpBind,
	}
	for target, kind := range want {
		op, ok := opAt(p, target)
		if !ok || op.Kind != kind {
			t.Errorf("%s: op %+v, want kind %s", target, op, kind)
		}
	}
	for _, tc := range []struct{ target, source string }{{DataTarget, spec.DataDir}, {SocketTarget, spec.SocketDir}} {
		op, _ := opAt(p, tc.target)
		if op.ReadOnly || op.Source != tc.source || !strings.Contains(op.String(), " rw") {
			t.Errorf("%s: %+v, want rw bind of %s", tc.target, op, tc.source)
		}
	}
	for _, target := range []string{"/dev/shm", "/tmp"} {
		op, _ := opAt(p, target)
		if op.Data != "mode=1777" || op.Flags&(NoSuid|NoDev) != NoSuid|NoDev {
			t.Errorf("%s: data %q flags %s, want mode=1777 nosuid,nodev", target, op.Data, op.Flags)
		}
	}
	passwd, _ := opAt(p, "/etc/passwd")
	lines := strings.Split(strings.TrimSuffix(string(passwd.Content), "\n"), "\n")
	if len(lines) != 1 || lines[0] != "postgres:x:1000:1000:PostgreSQL silo:/var/lib/postgresql:/usr/sbin/nologin" {
		t.Errorf("/etc/passwd = %q, want exactly the silo user", passwd.Content)
	}
	group, _ := opAt(p, "/etc/group")
	if string(group.Content) != "postgres:x:1000:\n" {
		t.Errorf("/etc/group = %q", group.Content)
	}
	nss, _ := opAt(p, "/etc/nsswitch.conf")
	if string(nss.Content) != "passwd: files\ngroup: files\n" {
		t.Errorf("/etc/nsswitch.conf = %q", nss.Content)
	}
	for _, sh := range shellPaths {
		if r, err := p.Resolve(sh); err == nil {
			t.Errorf("minimal exposes the shell %s via %+v", sh, r.Op)
		}
		if _, ok := opAt(p, sh); ok {
			t.Errorf("minimal has an op at %s", sh)
		}
	}
	if _, ok := opAt(p, "/usr"); ok {
		t.Error("minimal binds all of /usr")
	}
	if _, err := os.Stat(zoneinfoDir); err == nil {
		if op, ok := opAt(p, zoneinfoDir); !ok || !op.ReadOnly {
			t.Errorf("%s: %+v, want ro bind", zoneinfoDir, op)
		}
	}
	if _, err := os.Stat(localeDir); err == nil {
		if op, ok := opAt(p, localeDir); !ok || !op.ReadOnly {
			t.Errorf("%s: %+v, want ro bind", localeDir, op)
		}
	}
	if _, err := os.Stat(localtime); err == nil {
		resolvesTo(t, p, localtime, mustReal(t, localtime))
	}
}

func mustReal(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBuildMergedUsrSymlinks(t *testing.T) {
	t.Parallel()
	spec := hostSpec(t, config.LayoutMinimal, false)
	p := mustBuild(t, spec)
	for _, top := range []string{"/lib", "/lib64", "/bin", "/sbin"} {
		st, err := os.Lstat(top)
		op, ok := opAt(p, top)
		if err != nil || st.Mode()&os.ModeSymlink == 0 {
			if ok && op.Kind == OpSymlink {
				t.Errorf("%s is no symlink on the host but the plan makes it one", top)
			}
			continue
		}
		text, _ := os.Readlink(top)
		if ok && (op.Kind != OpSymlink || op.Source != text) {
			t.Errorf("%s: %+v, want symlink to %s as on the host", top, op, text)
		}
	}
	for _, op := range p.Ops {
		if op.Kind != OpBind || op.Target == DataTarget || op.Target == SocketTarget {
			continue
		}
		if real := mustReal(t, op.Source); real != op.Source || op.Target != op.Source {
			t.Errorf("layout bind %s -> %s is not at its real path %s", op.Source, op.Target, real)
		}
	}
}

func TestBuildStandardShape(t *testing.T) {
	t.Parallel()
	p := mustBuild(t, hostSpec(t, config.LayoutStandard, false))
	usr, ok := opAt(p, "/usr")
	if !ok || usr.Kind != OpBind || !usr.ReadOnly || usr.Source != "/usr" {
		t.Fatalf("/usr: %+v, want ro bind", usr)
	}
	ents, err := os.ReadDir("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		n := "/" + e.Name()
		if n != "/bin" && n != "/sbin" && !strings.HasPrefix(n, "/lib") {
			continue
		}
		op, ok := opAt(p, n)
		st, _ := os.Lstat(n)
		switch {
		case st.Mode()&os.ModeSymlink != 0:
			text, _ := os.Readlink(n)
			if !ok || op.Kind != OpSymlink || op.Source != text {
				t.Errorf("%s: %+v, want symlink %s", n, op, text)
			}
		case st.IsDir():
			if !ok || op.Kind != OpBind || !op.ReadOnly {
				t.Errorf("%s: %+v, want ro bind", n, op)
			}
		}
	}
	for _, op := range p.Ops {
		if op.Target != "/usr" && strings.HasPrefix(op.Target, "/usr/") {
			t.Errorf("op %q is already provided by the /usr bind", op.String())
		}
	}
	if r, err := p.Resolve("/bin/sh"); err != nil {
		t.Errorf("standard has no /bin/sh: %v", err)
	} else if got := mustReal(t, r.HostPath); got != mustReal(t, "/bin/sh") {
		t.Errorf("/bin/sh resolves to %s", got)
	}
	for _, target := range []string{"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/proc", "/dev/null", "/dev/shm", "/tmp", DataTarget, SocketTarget} {
		if _, ok := opAt(p, target); !ok {
			t.Errorf("standard lacks %s", target)
		}
	}
}

func TestBuildEmptyShape(t *testing.T) {
	t.Parallel()
	spec := Spec{Silo: "e", Layout: config.LayoutEmpty, DataDir: "/srv/e/data", SocketDir: "/srv/e/run"}
	p, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/dev/full dev", "/dev/null dev", "/dev/random dev", "/dev/shm tmpfs", "/dev/urandom dev", "/dev/zero dev",
		"/etc/group file", "/etc/nsswitch.conf file", "/etc/passwd file", "/proc proc", SocketTarget + " rw", "/tmp tmpfs", DataTarget + " rw",
	}
	var got []string
	for _, op := range p.Ops {
		got = append(got, op.Target+" "+op.modeWord())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("empty plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBuildOrder checks, for every layout with and without Bootstrap, that
// the plan runs top-down: no op follows one it contains (within the
// layout part), no target is duplicated or passes through a symlink of the
// plan, and every target is absolute and clean.
func TestBuildOrder(t *testing.T) {
	t.Parallel()
	for _, layout := range []config.Layout{config.LayoutMinimal, config.LayoutStandard, config.LayoutEmpty} {
		for _, bootstrap := range []bool{false, true} {
			t.Run(string(layout)+map[bool]string{false: "", true: "+bootstrap"}[bootstrap], func(t *testing.T) {
				t.Parallel()
				p := mustBuild(t, hostSpec(t, layout, bootstrap))
				symlinks := map[string]bool{}
				seen := map[string]bool{}
				for i, op := range p.Ops {
					if !path.IsAbs(op.Target) || path.Clean(op.Target) != op.Target {
						t.Errorf("op %d target %q not absolute and clean", i, op.Target)
					}
					if seen[op.Target] {
						t.Errorf("target %s appears twice", op.Target)
					}
					seen[op.Target] = true
					for dir := path.Dir(op.Target); dir != "/"; dir = path.Dir(dir) {
						if symlinks[dir] {
							t.Errorf("%s lies below the symlink %s", op.Target, dir)
						}
					}
					if op.Kind == OpSymlink {
						symlinks[op.Target] = true
					}
					for _, later := range p.Ops[i+1:] {
						if strings.HasPrefix(op.Target, later.Target+"/") {
							t.Errorf("%s comes before its parent %s", op.Target, later.Target)
						}
					}
					if op.Origin == "" {
						t.Errorf("op %q has no origin", op.String())
					}
				}
			})
		}
	}
}

func TestBuildBootstrap(t *testing.T) {
	t.Parallel()
	sh := mustReal(t, bootstrapShell)
	for _, layout := range []config.Layout{config.LayoutMinimal, config.LayoutEmpty} {
		run := mustBuild(t, hostSpec(t, layout, false))
		boot := mustBuild(t, hostSpec(t, layout, true))
		if _, err := run.Resolve(bootstrapShell); err == nil {
			t.Errorf("%s without Bootstrap has %s", layout, bootstrapShell)
		}
		resolvesTo(t, boot, bootstrapShell, sh)
		c, err := LibraryClosure([]string{bootstrapShell})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range c.Libraries {
			resolvesTo(t, boot, l.Path, l.RealPath)
		}
	}
	// initdb's own libraries (libpq and what it needs) come with minimal's
	// bootstrap plan.
	spec := hostSpec(t, config.LayoutMinimal, true)
	boot := mustBuild(t, spec)
	c, err := LibraryClosure([]string{spec.Install.Initdb()})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range c.Libraries {
		resolvesTo(t, boot, l.Path, l.RealPath)
	}
	// standard already has a shell: Bootstrap changes nothing.
	std := mustBuild(t, hostSpec(t, config.LayoutStandard, false)).String()
	stdBoot := mustBuild(t, hostSpec(t, config.LayoutStandard, true)).String()
	if strings.Count(std, "\n") != strings.Count(stdBoot, "\n") {
		t.Errorf("standard plan changes with Bootstrap:\n%s\nvs\n%s", std, stdBoot)
	}
}

// TestBuildMinimalMatchesLdd is issue 2's acceptance test: every library
// the real loader (through ldd) maps for the postmaster, and for each
// loadable module of pkglibdir, is in the minimal plan at the path the
// loader opens.
func TestBuildMinimalMatchesLdd(t *testing.T) {
	t.Parallel()
	ldd, err := exec.LookPath("ldd")
	if err != nil {
		t.Skip("ldd is not installed, so there is no independent resolution to compare with")
	}
	spec := hostSpec(t, config.LayoutMinimal, false)
	p := mustBuild(t, spec)
	bound := map[string]bool{}
	for _, op := range p.Ops {
		if op.Kind == OpBind {
			bound[op.Source] = true
		}
	}
	check := func(obj string, required bool) {
		libs, missing := lddLibraries(t, ldd, obj)
		if len(missing) > 0 {
			if required {
				t.Fatalf("ldd %s: not found: %v", obj, missing)
			}
			found := false
			for _, n := range p.Notes {
				found = found || strings.Contains(n, filepath.Base(obj))
			}
			if !found {
				t.Errorf("%s cannot load on this host (%v) and the plan has no note about it", obj, missing)
			}
			return
		}
		if required && len(libs) == 0 {
			t.Fatalf("ldd %s lists no libraries", obj)
		}
		for _, l := range libs {
			real := mustReal(t, l)
			if !bound[real] && !strings.HasPrefix(real, spec.Install.PkgLibDir+"/") {
				t.Errorf("%s needs %s (%s), which the plan does not bind", obj, l, real)
			}
			resolvesTo(t, p, l, real)
		}
	}
	check(spec.Install.Postmaster(), true)
	ents, err := os.ReadDir(spec.Install.PkgLibDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".so") && e.Type().IsRegular() {
			check(filepath.Join(spec.Install.PkgLibDir, e.Name()), false)
		}
	}
}

var (
	lddArrow  = regexp.MustCompile(`^\s*(\S+) => (/\S+) \(0x[0-9a-f]+\)$`)
	lddMiss   = regexp.MustCompile(`^\s*(\S+) => not found$`)
	lddInterp = regexp.MustCompile(`^\s*(/\S+) \(0x[0-9a-f]+\)$`)
)

// lddLibraries runs ldd and returns the paths it resolved (the program
// interpreter included, the vDSO excluded) and the names it could not.
func lddLibraries(t *testing.T, ldd, obj string) (paths, missing []string) {
	t.Helper()
	out, err := exec.Command(ldd, obj).Output()
	if err != nil && len(out) == 0 {
		t.Fatalf("ldd %s: %v", obj, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := lddArrow.FindStringSubmatch(line); m != nil {
			paths = append(paths, m[2])
		} else if m := lddMiss.FindStringSubmatch(line); m != nil {
			missing = append(missing, m[1])
		} else if m := lddInterp.FindStringSubmatch(line); m != nil {
			paths = append(paths, m[1])
		}
	}
	return paths, missing
}

// patchNeeded copies the ELF file src to dst with the DT_NEEDED string old
// replaced by new (same length) in .dynstr: a library this host lacks.
func patchNeeded(t *testing.T, src, dst, old, new string) {
	t.Helper()
	if len(old) != len(new) {
		t.Fatal("BUG: patchNeeded needs names of equal length")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dynstr := f.Section(".dynstr")
	if dynstr == nil {
		t.Skipf("%s has no .dynstr", src)
	}
	sec := b[dynstr.Offset : dynstr.Offset+dynstr.Size]
	i := bytes.Index(sec, []byte("\x00"+old+"\x00"))
	if i < 0 {
		t.Skipf("%s does not need %s", src, old)
	}
	copy(sec[i+1:], new)
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// firstNeeded returns the first DT_NEEDED entry of an ELF file other than
// libc, to turn into a missing library.
func firstNeeded(t *testing.T, p string) string {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range needed {
		if !strings.HasPrefix(n, "libc.") && len(n) >= 7 {
			return n
		}
	}
	t.Skipf("%s needs nothing but libc", p)
	return ""
}

// missingName is a soname of the same length as n that no host has
// ("libzstd.so.1" → "libzzzzzz.so"); n has at least 7 bytes.
func missingName(n string) string {
	return "lib" + strings.Repeat("z", len(n)-6) + ".so"
}

func TestBuildSkipsModuleWithMissingLibrary(t *testing.T) {
	t.Parallel()
	spec := hostSpec(t, config.LayoutMinimal, false)
	var module string
	ents, _ := os.ReadDir(spec.Install.PkgLibDir)
	for _, e := range ents {
		p := filepath.Join(spec.Install.PkgLibDir, e.Name())
		if !strings.HasSuffix(e.Name(), ".so") || !IsELF(p) {
			continue
		}
		if f, err := elf.Open(p); err == nil {
			needed, _ := f.DynString(elf.DT_NEEDED)
			f.Close()
			for _, n := range needed {
				if !strings.HasPrefix(n, "libc.") && len(n) >= 7 {
					module = p
				}
			}
		}
		if module != "" {
			break
		}
	}
	if module == "" {
		t.Skip("no pkglibdir module needs a library besides libc")
	}
	lib := t.TempDir()
	old := firstNeeded(t, module)
	patchNeeded(t, module, filepath.Join(lib, "needs_missing.so"), old, missingName(old))
	if err := os.WriteFile(filepath.Join(lib, "llvmjit_types.bc"), []byte("BC\xc0\xde"), 0o644); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, filepath.Join(lib, "bitcode/postgres"))
	spec.Install.PkgLibDir = lib
	p := mustBuild(t, spec)
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "needs_missing.so") || !strings.Contains(p.Notes[0], missingName(old)) {
		t.Fatalf("notes = %q, want one naming needs_missing.so and %s", p.Notes, missingName(old))
	}
	if op, ok := opAt(p, lib); !ok || !op.ReadOnly {
		t.Fatalf("pkglibdir %s not bound: %+v", lib, op)
	}
}

func TestBuildFailsWhenPostmasterCannotLoad(t *testing.T) {
	t.Parallel()
	spec := hostSpec(t, config.LayoutMinimal, false)
	bin := t.TempDir()
	old := firstNeeded(t, spec.Install.Postmaster())
	patchNeeded(t, spec.Install.Postmaster(), filepath.Join(bin, "postgres"), old, missingName(old))
	spec.Install.BinDir = bin
	_, err := Build(spec)
	var ue *UnresolvedError
	if !errors.As(err, &ue) || ue.Needed != missingName(old) {
		t.Fatalf("err = %v, want unresolved %s", err, missingName(old))
	}
}

func TestBuildMissingSourceNamesOrigin(t *testing.T) {
	t.Parallel()
	spec := hostSpec(t, config.LayoutMinimal, false)
	spec.Install.ShareDir = filepath.Join(t.TempDir(), "gone")
	_, err := Build(spec)
	var se *SourceError
	if !errors.As(err, &se) || se.Source != spec.Install.ShareDir || !strings.Contains(se.Origin, "sharedir") {
		t.Fatalf("err = %v, want SourceError for the sharedir", err)
	}
	if _, err := Build(Spec{Layout: "bogus", DataDir: "/d", SocketDir: "/s"}); err == nil {
		t.Fatal("unknown layout accepted")
	}
	if _, err := Build(Spec{Layout: config.LayoutEmpty, DataDir: "rel", SocketDir: "/s"}); err == nil {
		t.Fatal("relative data directory accepted")
	}
}

func TestBuildUserMounts(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	mkdirs(t, filepath.Join(src, "import/sub"), filepath.Join(src, "exp"))
	file := filepath.Join(src, "file.conf")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mount := func(source, target string, mode config.MountMode) config.Mount {
		return config.Mount{Source: source, Target: target, Mode: mode, Origin: "config.yaml:" + target}
	}
	mergedLib := false
	if st, err := os.Lstat("/lib"); err == nil && st.Mode()&os.ModeSymlink != 0 {
		mergedLib = true
	}
	tests := []struct {
		name    string
		layout  config.Layout
		mounts  []config.Mount
		want    []string // appended ops, printed
		errType any
		skip    bool
	}{
		{
			name:   "appended in parent-first order with their modes",
			layout: config.LayoutMinimal,
			mounts: []config.Mount{
				mount(filepath.Join(src, "import/sub"), "/import/sub", config.MountRW),
				mount(filepath.Join(src, "import"), "/import", config.MountRO),
				mount(file, "/etc/app.conf", config.MountRO),
			},
			want: []string{
				file + " -> /etc/app.conf ro",
				filepath.Join(src, "import") + " -> /import ro",
				filepath.Join(src, "import/sub") + " -> /import/sub rw",
			},
		},
		{
			name:   "inside standard's /usr at an existing mount point",
			layout: config.LayoutStandard,
			mounts: []config.Mount{mount(filepath.Join(src, "exp"), "/usr/share", config.MountRO)},
			want:   []string{filepath.Join(src, "exp") + " -> /usr/share ro"},
		},
		{
			name:    "inside standard's /usr without a mount point",
			layout:  config.LayoutStandard,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), "/usr/share/silo-proxy-no-such-dir", config.MountRO)},
			errType: &MountPointError{},
		},
		{
			name:    "a directory over a file",
			layout:  config.LayoutStandard,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), "/usr/bin/env", config.MountRO)},
			errType: &MountPointError{},
		},
		{
			name:    "child without a mount point in its parent mount",
			layout:  config.LayoutEmpty,
			mounts:  []config.Mount{mount(filepath.Join(src, "import"), "/import", config.MountRW), mount(filepath.Join(src, "exp"), "/import/new", config.MountRO)},
			errType: &MountPointError{},
		},
		{
			name:    "through a symlink of the plan",
			layout:  config.LayoutMinimal,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), "/lib/extra", config.MountRO)},
			errType: &MountPointError{},
			skip:    !mergedLib,
		},
		{
			name:    "hiding the data directory",
			layout:  config.LayoutEmpty,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), "/var/lib", config.MountRW)},
			errType: &MountPointError{},
		},
		{
			name:    "on the socket directory",
			layout:  config.LayoutEmpty,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), SocketTarget, config.MountRW)},
			errType: &MountPointError{},
		},
		{
			name:    "inside proc",
			layout:  config.LayoutEmpty,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), "/proc/sys", config.MountRO)},
			errType: &MountPointError{},
		},
		{
			name:    "the root",
			layout:  config.LayoutEmpty,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), "/", config.MountRO)},
			errType: &MountPointError{},
		},
		{
			name:    "missing source",
			layout:  config.LayoutEmpty,
			mounts:  []config.Mount{mount(filepath.Join(src, "gone"), "/gone", config.MountRO)},
			errType: &SourceError{},
		},
		{
			name:    "bad mode",
			layout:  config.LayoutEmpty,
			mounts:  []config.Mount{mount(filepath.Join(src, "exp"), "/exp", "wx")},
			errType: &SourceError{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.skip {
				t.Skip("the host's /lib is not a symlink")
			}
			spec := hostSpec(t, tt.layout, false)
			base := mustBuild(t, spec)
			spec.Mounts = tt.mounts
			p, err := Build(spec)
			if tt.errType != nil {
				switch tt.errType.(type) {
				case *MountPointError:
					var e *MountPointError
					if !errors.As(err, &e) || e.Origin != tt.mounts[len(tt.mounts)-1].Origin {
						t.Fatalf("err = %v, want MountPointError from %s", err, tt.mounts[len(tt.mounts)-1].Origin)
					}
				case *SourceError:
					var e *SourceError
					if !errors.As(err, &e) || e.Origin != tt.mounts[0].Origin {
						t.Fatalf("err = %v, want SourceError from %s", err, tt.mounts[0].Origin)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Ops) != len(base.Ops)+len(tt.want) {
				t.Fatalf("%d ops, want %d layout ops + %d mounts", len(p.Ops), len(base.Ops), len(tt.want))
			}
			for i, w := range tt.want {
				op := p.Ops[len(base.Ops)+i]
				if op.String() != w || op.Flags != NoSuid|NoDev || !strings.HasPrefix(op.Origin, "config.yaml:") {
					t.Errorf("mount %d = %q (%s, %s), want %q nosuid,nodev", i, op.String(), op.Flags, op.Origin, w)
				}
			}
		})
	}
}

// fakeRoot builds a host tree from a spec: "dir/", "file", or
// "link -> text".
func fakeRoot(t *testing.T, entries ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, e := range entries {
		p := filepath.Join(root, strings.SplitN(e, " -> ", 2)[0])
		mkdirs(t, filepath.Dir(p))
		switch {
		case strings.Contains(e, " -> "):
			if err := os.Symlink(strings.SplitN(e, " -> ", 2)[1], p); err != nil {
				t.Fatal(err)
			}
		case strings.HasSuffix(e, "/"):
			mkdirs(t, p)
		default:
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// TestMirrorHostLayouts checks how loader paths and the top-level
// directories are recreated on a merged-/usr host (Debian 12) and on a
// host with real /lib and /bin directories.
func TestMirrorHostLayouts(t *testing.T) {
	t.Parallel()
	const ld = "/lib64/ld-linux-x86-64.so.2"
	const libc = "/lib/x86_64-linux-gnu/libc.so.6"
	tests := []struct {
		name    string
		root    []string
		mirror  []string
		want    []string
		wantTop []string
	}{
		{
			name: "merged usr",
			root: []string{"bin -> usr/bin", "lib -> usr/lib", "lib64 -> usr/lib64", "sbin -> usr/sbin", "usr/bin/", "usr/sbin/",
				"usr/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
				"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libc.so.6", "etc/"},
			mirror: []string{ld, libc},
			want: []string{
				"usr/lib -> /lib symlink",
				"usr/lib64 -> /lib64 symlink",
				"/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 -> /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ro",
				"/usr/lib/x86_64-linux-gnu/libc.so.6 -> /usr/lib/x86_64-linux-gnu/libc.so.6 ro",
				"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 -> /usr/lib64/ld-linux-x86-64.so.2 symlink",
			},
			wantTop: []string{"usr/bin -> /bin symlink", "usr/lib -> /lib symlink", "usr/lib64 -> /lib64 symlink", "usr/sbin -> /sbin symlink", "/usr -> /usr ro"},
		},
		{
			name: "separate lib and bin",
			root: []string{"bin/", "sbin/", "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
				"lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib/", "libexec-not-lib/", "library -> usr/lib", "etc/"},
			mirror: []string{ld, libc},
			want: []string{
				"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 ro",
				"/lib/x86_64-linux-gnu/libc.so.6 -> /lib/x86_64-linux-gnu/libc.so.6 ro",
				"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 -> /lib64/ld-linux-x86-64.so.2 symlink",
			},
			// Every top-level lib* entry counts, as /lib* would match it.
			wantTop: []string{"/bin -> /bin ro", "/lib -> /lib ro", "/lib64 -> /lib64 ro", "/libexec-not-lib -> /libexec-not-lib ro", "usr/lib -> /library symlink", "/sbin -> /sbin ro", "/usr -> /usr ro"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := fakeRoot(t, tt.root...)
			b := &builder{env: buildEnv{root: root}, layout: config.LayoutMinimal, mirrored: map[string]bool{}, isDirMemo: map[string]bool{}}
			for _, m := range tt.mirror {
				if err := b.mirror(m, "test"); err != nil {
					t.Fatal(err)
				}
			}
			ops, err := b.normalize(b.ops)
			if err != nil {
				t.Fatal(err)
			}
			if got := (Plan{Ops: ops}).String(); got != strings.Join(tt.want, "\n")+"\n" {
				t.Errorf("mirror:\n%s\nwant:\n%s", got, strings.Join(tt.want, "\n"))
			}

			b = &builder{env: buildEnv{root: root}, layout: config.LayoutStandard, mirrored: map[string]bool{}, isDirMemo: map[string]bool{}}
			if err := b.standardTop(); err != nil {
				t.Fatal(err)
			}
			ops, err = b.normalize(b.ops)
			if err != nil {
				t.Fatal(err)
			}
			if got := (Plan{Ops: ops}).String(); got != strings.Join(tt.wantTop, "\n")+"\n" {
				t.Errorf("standard top level:\n%s\nwant:\n%s", got, strings.Join(tt.wantTop, "\n"))
			}
		})
	}
}

func TestMirrorErrors(t *testing.T) {
	t.Parallel()
	root := fakeRoot(t, "a -> b", "b -> a", "file", "lib/")
	b := &builder{env: buildEnv{root: root}, mirrored: map[string]bool{}}
	for _, p := range []string{"/a/x", "/file/x", "/missing", "/"} {
		var se *SourceError
		if err := b.mirror(p, "origin "+p); !errors.As(err, &se) || se.Origin != "origin "+p {
			t.Errorf("mirror(%s) = %v, want SourceError with its origin", p, err)
		}
	}
}

func BenchmarkBuildMinimal(b *testing.B) {
	spec := hostSpec(b, config.LayoutMinimal, false)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(spec); err != nil {
			b.Fatal(err)
		}
	}
}
