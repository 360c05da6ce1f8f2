package fslayout

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/silo-proxy/silo-proxy/config"
)

// Host paths whose location is fixed by glibc or POSIX rather than by the
// PostgreSQL installation.
const (
	// bootstrapShell is _PATH_BSHELL: popen(3) runs `/bin/sh -c`, and
	// initdb starts its bootstrap backend with popen.
	bootstrapShell = "/bin/sh"
	// localeDir is glibc's compiled-in locale directory (complocaledir,
	// $prefix/lib/locale): locale-archive and compiled locales.
	localeDir = "/usr/lib/locale"
	// zoneinfoDir is glibc's TZDIR, read by localtime() for /etc/localtime
	// and TZ; the server itself may use its own copy (SystemTZData).
	zoneinfoDir = "/usr/share/zoneinfo"
	localtime   = "/etc/localtime"
	// nssFilesLib is the NSS module for "files". glibc 2.34 and later build
	// it into libc; older ones dlopen it, so it is bound when present.
	nssFilesLib = "libnss_files.so.2"
)

// devNodes are the device nodes every silo gets, bound from the host's
// /dev because a user namespace cannot mknod.
var devNodes = []string{"null", "zero", "full", "random", "urandom"}

// shellNames are program names that give a command interpreter; minimal
// must expose none of them.
var shellNames = []string{"sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "ksh93", "mksh", "pdksh", "posh", "yash", "csh", "tcsh", "fish", "busybox"}

// shellDirs are where shells are looked for in a minimal plan.
var shellDirs = []string{"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin"}

// siloHome is the silo user's home directory: the parent of the data
// directory, as Debian's postgres user has /var/lib/postgresql.
var siloHome = path.Dir(DataTarget)

// Generated identity files. initdb and postgres look their uid up with
// getpwuid and refuse to run without an entry; nsswitch.conf keeps glibc
// from consulting anything but these files (no NSS module, no network).
var (
	passwdContent   = fmt.Sprintf("%s:x:%d:%d:PostgreSQL silo:%s:/usr/sbin/nologin\n", PostgresUser, PostgresUID, PostgresGID, siloHome)
	groupContent    = fmt.Sprintf("%s:x:%d:\n", PostgresUser, PostgresGID)
	nsswitchContent = "passwd: files\ngroup: files\n"
)

// Build computes the mount plan of one silo: the base layout (minimal,
// standard or empty, DESIGN.md §4), the bootstrap additions when
// spec.Bootstrap is set, then the silo's own mounts.
//
// minimal and standard read the host: the ELF files of the installation
// and their libraries (about a hundred files, each parsed once, plus
// /etc/ld.so.cache), so a Build takes milliseconds. The plan depends only
// on the spec and the host's installed files, so a caller starting silos
// repeatedly may cache it per configuration generation.
//
// Every bind source is verified to exist, except DataDir and SocketDir,
// which the spawner creates before it runs the plan. A silo mount whose
// target lies inside a bind of the plan (say /usr/share/foo under
// standard's /usr) is accepted only if its mount point already exists in
// that bind's source tree: the executor never creates directories inside a
// bind, where they would land in a host directory or fail on a read-only
// one. Targets reached through a symlink of the plan are rejected.
func Build(spec Spec) (Plan, error) {
	return build(spec, buildEnv{res: NewResolver(HostResolverConfig())})
}

// buildEnv is the host a plan is computed against.
type buildEnv struct {
	// root prefixes every host lookup of the layout code; "" is the real
	// host. Tests point it at a fake tree to exercise other host layouts.
	root string
	res  *Resolver
}

type builder struct {
	env       buildEnv
	spec      Spec
	layout    config.Layout
	ops       []MountOp
	notes     []string
	mirrored  map[string]bool
	isDirMemo map[string]bool
	lstats    map[string]lstatResult
}

func build(spec Spec, env buildEnv) (Plan, error) {
	b := &builder{env: env, spec: spec, layout: spec.Layout, mirrored: map[string]bool{}, isDirMemo: map[string]bool{}}
	if b.layout == "" {
		b.layout = config.LayoutMinimal
	}
	for _, d := range []struct{ what, p string }{{"data directory", spec.DataDir}, {"socket directory", spec.SocketDir}} {
		if !filepath.IsAbs(d.p) {
			return Plan{}, fmt.Errorf("silo %s: %s %q is not an absolute path", spec.Silo, d.what, d.p)
		}
	}
	switch b.layout {
	case config.LayoutMinimal:
		if err := b.minimal(true); err != nil {
			return Plan{}, err
		}
		if spec.Bootstrap {
			if err := b.shell(); err != nil {
				return Plan{}, err
			}
			if err := b.closure("bootstrap: initdb", spec.Install.Initdb()); err != nil {
				return Plan{}, err
			}
		}
	case config.LayoutStandard:
		if err := b.standardTop(); err != nil {
			return Plan{}, err
		}
		if err := b.minimal(false); err != nil {
			return Plan{}, err
		}
	case config.LayoutEmpty:
		if spec.Bootstrap {
			if err := b.shell(); err != nil {
				return Plan{}, err
			}
		}
	default:
		return Plan{}, fmt.Errorf("silo %s: unknown layout %q", spec.Silo, b.layout)
	}
	b.common()

	ops, err := b.normalize(b.ops)
	if err != nil {
		return Plan{}, err
	}
	if err := b.checkSources(ops); err != nil {
		return Plan{}, err
	}
	if b.layout == config.LayoutMinimal && !spec.Bootstrap {
		if err := b.checkNoShell(ops); err != nil {
			return Plan{}, err
		}
	}
	n := len(ops)
	user, err := b.userMounts()
	if err != nil {
		return Plan{}, err
	}
	ops = append(ops, user...)
	ix := newPlanIndex(ops)
	for i := range ops {
		if err := b.checkMountPoint(ix, i); err != nil {
			return Plan{}, err
		}
	}
	if err := b.checkSources(ops[n:]); err != nil {
		return Plan{}, err
	}
	sort.Strings(b.notes)
	return Plan{Ops: ops, Notes: b.notes}, nil
}

func (b *builder) host(p string) string {
	if b.env.root == "" {
		return p
	}
	return filepath.Join(b.env.root, p)
}

func (b *builder) add(op MountOp) { b.ops = append(b.ops, op) }

// mirror makes host path p work at the same path inside the silo: every
// symlink met while resolving p is recreated with the same text (so
// /lib -> usr/lib on a merged-/usr host, or /lib64/ld-linux-x86-64.so.2 ->
// /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2), and the file or directory
// finally reached is bound read-only at its real path. On a host without
// symlinks on the way this is a single bind at p.
func (b *builder) mirror(p, origin string) error {
	p = path.Clean(p)
	if b.mirrored[p] {
		return nil
	}
	b.mirrored[p] = true
	links := 0
	comps := splitPath(p)
	cur := "/"
	for len(comps) > 0 {
		next := path.Join(cur, comps[0])
		comps = comps[1:]
		st, err := b.lstat(next)
		if err != nil {
			return &SourceError{Source: p, Target: p, Origin: origin, Err: err}
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			if len(comps) > 0 && !st.IsDir() {
				return &SourceError{Source: p, Target: p, Origin: origin, Err: errNotDir}
			}
			cur = next
			continue
		}
		links++
		if links > maxSymlinks {
			return &SourceError{Source: p, Target: p, Origin: origin, Err: errLoop}
		}
		text, err := os.Readlink(b.host(next))
		if err != nil {
			return &SourceError{Source: p, Target: p, Origin: origin, Err: err}
		}
		b.add(MountOp{Kind: OpSymlink, Source: text, Target: next, Origin: origin})
		target := text
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		comps = append(splitPath(target), comps...)
		cur = "/"
	}
	if cur == "/" {
		return &SourceError{Source: p, Target: p, Origin: origin, Err: errors.New("the host root cannot be bound")}
	}
	b.mirrored[cur] = true
	b.add(MountOp{Kind: OpBind, Source: cur, Target: cur, ReadOnly: true, Origin: origin})
	return nil
}

// lstat is os.Lstat of a host path, remembered for the Build: mirroring a
// hundred libraries walks the same few directories again and again.
func (b *builder) lstat(p string) (fs.FileInfo, error) {
	if r, ok := b.lstats[p]; ok {
		return r.info, r.err
	}
	info, err := os.Lstat(b.host(p))
	if b.lstats == nil {
		b.lstats = map[string]lstatResult{}
	}
	b.lstats[p] = lstatResult{info, err}
	return info, err
}

type lstatResult struct {
	info fs.FileInfo
	err  error
}

// mirrorIfExists mirrors p when the host has it.
func (b *builder) mirrorIfExists(p, origin string) error {
	if _, err := os.Stat(b.host(p)); err != nil {
		return nil
	}
	return b.mirror(p, origin)
}

// closure mirrors the libraries of the ELF files at paths; an
// unresolvable library is an error.
func (b *builder) closure(origin string, paths ...string) error {
	c, err := b.env.res.Closure(paths...)
	if err != nil {
		return fmt.Errorf("%s: %w", origin, err)
	}
	return b.addLibraries(c, origin)
}

func (b *builder) addLibraries(c Closure, origin string) error {
	for _, lib := range c.Libraries {
		what := lib.Soname
		if lib.Interp {
			what = "program interpreter"
		}
		if err := b.mirror(lib.Path, origin+": "+what); err != nil {
			return err
		}
		for _, v := range b.env.res.HWCapVariants(lib) {
			if err := b.mirror(v.Path, origin+": "+what+" (hwcaps)"); err != nil {
				return err
			}
		}
	}
	return nil
}

// minimal adds what the postmaster needs. notes asks for a note per
// pkglibdir module left out (only meaningful when the layout is minimal:
// under standard the module stays visible through /usr).
func (b *builder) minimal(notes bool) error {
	inst := b.spec.Install
	origin := "layout " + string(b.layout)
	for _, d := range []struct{ what, p string }{{"bindir", inst.BinDir}, {"pkglibdir", inst.PkgLibDir}, {"sharedir", inst.ShareDir}} {
		if d.p == "" || !filepath.IsAbs(d.p) {
			return &InstallError{BinDir: inst.BinDir, What: d.what, Path: d.p, Err: errors.New("not an absolute path")}
		}
		if err := b.mirror(d.p, origin+": "+d.what); err != nil {
			return err
		}
	}
	postmaster := inst.Postmaster()
	pm, err := b.env.res.Closure(postmaster)
	if err != nil {
		return fmt.Errorf("%s: libraries of %s: %w", origin, postmaster, err)
	}
	if err := b.addLibraries(pm, origin+": "+postmaster); err != nil {
		return err
	}
	if err := b.modules(origin, notes); err != nil {
		return err
	}
	// NSS "files" for getpwuid on a glibc that does not build it in.
	if lib, ok := b.nssFiles(postmaster); ok {
		if err := b.mirror(lib.Path, origin+": "+nssFilesLib); err != nil {
			return err
		}
	}
	// Time zones: glibc's TZDIR, the server's --with-system-tzdata
	// directory, and the host's /etc/localtime (a symlink into TZDIR on
	// Debian, recreated as such).
	if err := b.mirrorIfExists(zoneinfoDir, origin+": time zone data"); err != nil {
		return err
	}
	if inst.SystemTZData != "" {
		if err := b.mirrorIfExists(inst.SystemTZData, origin+": server time zone data"); err != nil {
			return err
		}
	}
	if _, err := os.Lstat(b.host(localtime)); err == nil {
		if err := b.mirror(localtime, origin+": local time zone"); err != nil {
			return err
		}
	}
	if err := b.mirrorIfExists(localeDir, origin+": locale data"); err != nil {
		return err
	}
	// glibc loads iconv modules from <libdir>/gconv, next to libc itself,
	// for conversions between encodings.
	for _, lib := range pm.Libraries {
		if strings.HasPrefix(lib.Soname, "libc.so.") {
			if err := b.mirrorIfExists(path.Join(path.Dir(lib.RealPath), "gconv"), origin+": gconv modules"); err != nil {
				return err
			}
		}
	}
	return nil
}

// modules adds the libraries of the loadable modules in pkglibdir. A
// module whose libraries this host lacks (plpython3.so without libpython)
// could not be loaded outside the silo either: it is left out with a note
// instead of failing the silo.
func (b *builder) modules(origin string, notes bool) error {
	dir := b.spec.Install.PkgLibDir
	ents, err := os.ReadDir(b.host(dir))
	if err != nil {
		return &SourceError{Source: dir, Target: dir, Origin: origin + ": pkglibdir", Err: err}
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		if e.IsDir() {
			// bitcode/, pgxs/: not loadable objects.
			continue
		}
		if !e.Type().IsRegular() {
			if st, err := os.Stat(b.host(p)); err != nil || !st.Mode().IsRegular() {
				continue
			}
		}
		c, err := b.env.res.Closure(p)
		if errors.Is(err, ErrNotELF) {
			// llvmjit_types.bc and other data files.
			continue
		}
		if err != nil {
			var ue *UnresolvedError
			var ee *ELFError
			if notes && (errors.As(err, &ue) || errors.As(err, &ee)) {
				b.notes = append(b.notes, fmt.Sprintf("%s: pkglibdir module %s left out of the library closure: %v", origin, e.Name(), err))
			}
			if ue == nil && ee == nil {
				return err
			}
			continue
		}
		if err := b.addLibraries(c, origin+": module "+e.Name()); err != nil {
			return err
		}
	}
	return nil
}

// nssFiles resolves libnss_files.so.2 the way the postmaster would
// dlopen it.
func (b *builder) nssFiles(postmaster string) (Library, bool) {
	real, err := filepath.EvalSymlinks(postmaster)
	if err != nil {
		return Library{}, false
	}
	o, err := b.env.res.object(real)
	if err != nil {
		return Library{}, false
	}
	res := b.env.res.resolve(node{path: postmaster, real: real, obj: o, root: o, rootReal: real}, nssFilesLib)
	return res.lib, res.ok
}

// standardTop adds /usr and the top-level /lib*, /bin and /sbin as the
// host has them: symlinks into /usr on a merged-/usr host, read-only
// binds otherwise.
func (b *builder) standardTop() error {
	origin := "layout standard"
	ents, err := os.ReadDir(b.host("/"))
	if err != nil {
		return &SourceError{Source: "/", Target: "/", Origin: origin, Err: err}
	}
	for _, e := range ents {
		name := e.Name()
		if name != "bin" && name != "sbin" && !strings.HasPrefix(name, "lib") {
			continue
		}
		p := "/" + name
		st, err := os.Lstat(b.host(p))
		if err != nil {
			continue
		}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			text, err := os.Readlink(b.host(p))
			if err != nil {
				return &SourceError{Source: p, Target: p, Origin: origin + ": " + p, Err: err}
			}
			b.add(MountOp{Kind: OpSymlink, Source: text, Target: p, Origin: origin + ": " + p})
		case st.IsDir():
			b.add(MountOp{Kind: OpBind, Source: p, Target: p, ReadOnly: true, Origin: origin + ": " + p})
		}
	}
	return b.mirror("/usr", origin+": /usr")
}

// shell adds /bin/sh and what it resolves to (on Debian the symlink chain
// /bin -> usr/bin, /usr/bin/sh -> dash) with its libraries.
func (b *builder) shell() error {
	origin := "bootstrap: " + bootstrapShell
	if err := b.mirror(bootstrapShell, origin); err != nil {
		return err
	}
	return b.closure(origin, b.host(bootstrapShell))
}

// common adds what every layout has: the generated identity files, the
// device nodes, tmpfs /dev/shm and /tmp, a fresh /proc, and the data and
// socket directories.
//
// empty keeps the identity files and both tmpfs mounts too: they expose
// nothing of the host, the server refuses to start without a passwd entry
// for its uid, and with the default dynamic_shared_memory_type=posix it
// needs /dev/shm.
func (b *builder) common() {
	origin := "layout " + string(b.layout)
	for _, f := range []struct{ target, content string }{
		{"/etc/passwd", passwdContent},
		{"/etc/group", groupContent},
		{"/etc/nsswitch.conf", nsswitchContent},
	} {
		b.add(MountOp{Kind: OpFile, Target: f.target, Content: []byte(f.content), Mode: 0o644, Origin: origin + ": generated " + f.target})
	}
	for _, d := range devNodes {
		b.add(MountOp{Kind: OpDev, Source: "/dev/" + d, Target: "/dev/" + d, Origin: origin + ": /dev/" + d})
	}
	for _, t := range []string{"/dev/shm", "/tmp"} {
		b.add(MountOp{Kind: OpTmpfs, Target: t, Data: "mode=1777", Mode: fs.ModeDir | fs.ModeSticky | 0o777, Flags: NoSuid | NoDev, Origin: origin + ": " + t})
	}
	b.add(MountOp{Kind: OpProc, Target: "/proc", Flags: NoSuid | NoDev | NoExec, Origin: origin + ": /proc"})
	b.add(MountOp{Kind: OpBind, Source: filepath.Clean(b.spec.DataDir), Target: DataTarget, Flags: NoSuid | NoDev, Origin: "silo " + b.spec.Silo + ": data directory"})
	b.add(MountOp{Kind: OpBind, Source: filepath.Clean(b.spec.SocketDir), Target: SocketTarget, Flags: NoSuid | NoDev | NoExec, Origin: "silo " + b.spec.Silo + ": socket directory"})
}

// targetLess orders targets so that a parent precedes its children and
// siblings sort by name: '/' compares lowest.
func targetLess(a, b string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return true
		}
		if cb == '/' {
			return false
		}
		return ca < cb
	}
	return len(a) < len(b)
}

func sameOp(a, b MountOp) bool {
	return a.Kind == b.Kind && a.Source == b.Source && a.Target == b.Target && a.ReadOnly == b.ReadOnly &&
		a.Data == b.Data && bytes.Equal(a.Content, b.Content) && a.Mode == b.Mode && a.Flags == b.Flags
}

// normalize sorts the layout ops parents first, drops duplicates (the same
// file reached from several ELF files), and drops ops that a read-only
// bind of the same host tree already provides (standard's /usr covers
// every library of the closure).
func (b *builder) normalize(ops []MountOp) ([]MountOp, error) {
	sort.SliceStable(ops, func(i, j int) bool { return targetLess(ops[i].Target, ops[j].Target) })
	var out []MountOp
	ix := &planIndex{at: map[string][]int{}}
	for _, op := range ops {
		if k := len(out) - 1; k >= 0 && out[k].Target == op.Target {
			if sameOp(out[k], op) {
				continue
			}
			return nil, &MountPointError{Target: op.Target, Origin: op.Origin, Reason: fmt.Sprintf("conflicts with %q (%s)", out[k].String(), out[k].Origin)}
		}
		if b.covered(ix, op) {
			continue
		}
		out = append(out, op)
		ix.ops = out
		ix.at[op.Target] = append(ix.at[op.Target], len(out)-1)
	}
	return out, nil
}

// covered reports whether op, about to follow ix.ops, is already provided
// by an identity bind (host path at the same path) above it.
func (b *builder) covered(ix *planIndex, op MountOp) bool {
	cover := -1
	comps := splitPath(op.Target)
	cur := "/"
	for _, c := range comps[:max(len(comps)-1, 0)] {
		cur = path.Join(cur, c)
		if j := ix.visibleAt(cur, cover, len(ix.ops)); j >= 0 {
			cover = j
		}
	}
	if cover < 0 {
		return false
	}
	c := ix.ops[cover]
	if c.Kind != OpBind || c.Source != c.Target {
		return false
	}
	switch op.Kind {
	case OpBind:
		return op.Source == op.Target && op.ReadOnly == c.ReadOnly && op.Flags == c.Flags
	case OpSymlink:
		text, err := os.Readlink(b.host(op.Target))
		return err == nil && text == op.Source
	}
	return false
}

// sourceIsDir reports whether the source of a bind or dev op is a
// directory; mount points must have the same type as their source.
func (b *builder) sourceIsDir(op MountOp) bool {
	if v, ok := b.isDirMemo[op.Source]; ok {
		return v
	}
	st, err := os.Stat(b.host(op.Source))
	v := err == nil && st.IsDir()
	b.isDirMemo[op.Source] = v
	return v
}

// wantsDir reports whether op needs a directory as its mount point.
func (b *builder) wantsDir(op MountOp) bool {
	switch op.Kind {
	case OpBind, OpDev:
		if op.Target == DataTarget || op.Target == SocketTarget {
			return true
		}
		return b.sourceIsDir(op)
	case OpTmpfs, OpProc, OpDir:
		return true
	}
	return false
}

// checkMountPoint verifies that ops[i] can be carried out after ops[:i]:
// its path passes through no symlink, file or proc of the plan, and inside
// a bind its mount point already exists in the source tree with the right
// type (see Plan).
func (b *builder) checkMountPoint(ix *planIndex, i int) error {
	op := ix.ops[i]
	fail := func(under, reason string) error {
		return &MountPointError{Target: op.Target, Origin: op.Origin, Under: under, Reason: reason}
	}
	comps := splitPath(op.Target)
	if len(comps) == 0 || op.Target != path.Clean(op.Target) {
		return fail("", "must be an absolute, clean path below /")
	}
	cur, cover := "/", -1
	for k, c := range comps {
		next := path.Join(cur, c)
		last := k == len(comps)-1
		if j := ix.visibleAt(next, cover, i); j >= 0 {
			prev := ix.ops[j]
			switch {
			case prev.Kind == OpSymlink:
				return fail(next, fmt.Sprintf("passes through the symlink %s -> %s of the plan; use the path it points to", next, prev.Source))
			case prev.Kind == OpProc:
				return fail(next, "lies inside proc")
			case !last && (prev.Kind == OpFile || ((prev.Kind == OpBind || prev.Kind == OpDev) && !b.wantsDir(prev))):
				return fail(next, "lies beneath a file")
			case last && (op.Kind == OpFile || op.Kind == OpSymlink || op.Kind == OpDir):
				return fail(next, fmt.Sprintf("would have to replace %q (%s)", prev.String(), prev.Origin))
			case last && b.wantsDir(op) != b.wantsDir(prev):
				return fail(next, fmt.Sprintf("cannot mount a %s on the %s %q (%s)", kindWord(b.wantsDir(op)), kindWord(b.wantsDir(prev)), prev.String(), prev.Origin))
			}
			cover, cur = j, next
			continue
		}
		if cover >= 0 && ix.ops[cover].Kind == OpBind {
			bind := ix.ops[cover]
			hp := ix.hostPath(cover, next)
			st, err := os.Lstat(b.host(hp))
			switch {
			case err != nil:
				return fail(bind.Target, fmt.Sprintf("mount point %s does not exist in the bind source %s, and it cannot be created inside a bind", hp, bind.Source))
			case st.Mode()&fs.ModeSymlink != 0:
				return fail(bind.Target, fmt.Sprintf("%s in the bind source is a symlink", hp))
			case !last && !st.IsDir():
				return fail(bind.Target, fmt.Sprintf("%s in the bind source is not a directory", hp))
			case last && (op.Kind == OpFile || op.Kind == OpSymlink || op.Kind == OpDir):
				return fail(bind.Target, "cannot be created inside a bind mount")
			case last && b.wantsDir(op) != st.IsDir():
				return fail(bind.Target, fmt.Sprintf("cannot mount a %s on the %s %s", kindWord(b.wantsDir(op)), kindWord(st.IsDir()), hp))
			}
		}
		cur = next
	}
	return nil
}

func kindWord(dir bool) string {
	if dir {
		return "directory"
	}
	return "file"
}

// checkSources verifies the host side of binds and device nodes.
func (b *builder) checkSources(ops []MountOp) error {
	for _, op := range ops {
		if op.Kind != OpBind && op.Kind != OpDev {
			continue
		}
		if op.Target == DataTarget || op.Target == SocketTarget {
			// Created by the spawner (owned by the silo's uid) before the
			// plan runs; `silo-proxy layout` must work before that.
			continue
		}
		st, err := os.Stat(b.host(op.Source))
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return &SourceError{Source: op.Source, Target: op.Target, Origin: op.Origin, Err: err}
		}
		if op.Kind == OpDev && st.Mode()&fs.ModeCharDevice == 0 {
			return &SourceError{Source: op.Source, Target: op.Target, Origin: op.Origin, Err: errors.New("not a character device")}
		}
	}
	return nil
}

// checkNoShell verifies that no shell is reachable in a minimal plan: not
// at the usual places, not in the installation's directories.
func (b *builder) checkNoShell(ops []MountOp) error {
	ix := newPlanIndex(ops)
	for _, d := range shellDirs {
		for _, n := range shellNames {
			p := path.Join(d, n)
			if r, err := ix.resolve(p, len(ops)); err == nil {
				return &ShellError{Path: p, Origin: r.Op.Origin}
			}
		}
	}
	inst := b.spec.Install
	for _, d := range []string{inst.BinDir, inst.PkgLibDir} {
		for _, n := range shellNames {
			p := path.Join(d, n)
			if _, err := os.Lstat(b.host(p)); err == nil {
				return &ShellError{Path: p, Origin: "layout minimal: postgres installation"}
			}
		}
	}
	return nil
}

// reservedTargets are the silo's own paths, which no silo mount may
// replace or hide.
var reservedTargets = []string{"/proc", DataTarget, SocketTarget}

func isUnder(p, dir string) bool {
	return dir == "/" || strings.HasPrefix(p, dir+"/")
}

// userMounts turns the silo's mounts into bind ops, parents first.
func (b *builder) userMounts() ([]MountOp, error) {
	var ops []MountOp
	for i, m := range b.spec.Mounts {
		origin := m.Origin
		if origin == "" {
			origin = fmt.Sprintf("silo %s: mounts[%d]", b.spec.Silo, i)
		}
		if !path.IsAbs(m.Target) || path.Clean(m.Target) != m.Target {
			return nil, &MountPointError{Target: m.Target, Origin: origin, Reason: "must be an absolute, clean path"}
		}
		if m.Target == "/" {
			return nil, &MountPointError{Target: m.Target, Origin: origin, Reason: "is the silo root"}
		}
		for _, r := range reservedTargets {
			if m.Target == r || isUnder(r, m.Target) || isUnder(m.Target, "/proc") {
				return nil, &MountPointError{Target: m.Target, Origin: origin, Under: r, Reason: "would hide a path reserved for the silo"}
			}
		}
		if !filepath.IsAbs(m.Source) {
			return nil, &SourceError{Source: m.Source, Target: m.Target, Origin: origin, Err: errors.New("not an absolute path")}
		}
		var ro bool
		switch m.Mode {
		case config.MountRO:
			ro = true
		case config.MountRW:
		default:
			return nil, &SourceError{Source: m.Source, Target: m.Target, Origin: origin, Err: fmt.Errorf("mode %q is neither ro nor rw", m.Mode)}
		}
		ops = append(ops, MountOp{Kind: OpBind, Source: filepath.Clean(m.Source), Target: m.Target, ReadOnly: ro, Flags: NoSuid | NoDev, Origin: origin})
	}
	sort.SliceStable(ops, func(i, j int) bool { return targetLess(ops[i].Target, ops[j].Target) })
	return ops, nil
}
