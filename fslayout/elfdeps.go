package fslayout

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

// Host files the dynamic loader configuration is read from.
const (
	hostLDCache  = "/etc/ld.so.cache"
	hostLDSoConf = "/etc/ld.so.conf"
)

// Library is one shared object the dynamic loader maps for an ELF file.
type Library struct {
	// Soname is the DT_NEEDED entry that asked for it ("libc.so.6"); empty
	// for the program interpreter.
	Soname string
	// Path is the path the loader opens (from ld.so.cache, a search
	// directory or PT_INTERP), e.g. /lib/x86_64-linux-gnu/libc.so.6: it
	// must resolve inside the silo.
	Path string
	// RealPath is Path with every symlink resolved: the file that is bound.
	RealPath string
	// Interp marks the program interpreter (PT_INTERP), e.g.
	// /lib64/ld-linux-x86-64.so.2.
	Interp bool
}

// Closure is the set of shared objects an ELF file (or several) needs.
type Closure struct {
	// Libraries are sorted by Path, each once. The ELF files the closure
	// was asked for are not included.
	Libraries []Library
}

// ResolverConfig is the loader configuration a Resolver follows.
type ResolverConfig struct {
	// Cache is the parsed ld.so.cache; nil when the host has none.
	Cache *LDCache
	// ConfDirs are the ld.so.conf directories. The loader itself never
	// reads ld.so.conf (ldconfig turns it into the cache), so they are
	// searched only when Cache is nil: with a cache, a library present
	// only in a ConfDir would not load outside the silo either.
	ConfDirs []string
	// SystemDirs, when non-nil, replaces the loader's built-in trusted
	// directories (multiarch, lib64, lib under / and /usr).
	SystemDirs []string
}

// HostResolverConfig reads the host's /etc/ld.so.cache, falling back to
// the directories of /etc/ld.so.conf(.d) when the cache is missing or in a
// format this package does not read.
func HostResolverConfig() ResolverConfig {
	var cfg ResolverConfig
	if c, err := ReadLDCache(hostLDCache); err == nil {
		cfg.Cache = c
		return cfg
	}
	if dirs, err := ReadLDSoConfDirs(hostLDSoConf); err == nil {
		cfg.ConfDirs = dirs
	}
	return cfg
}

// Resolver computes ELF dependency closures the way ld.so resolves
// DT_NEEDED names. It parses each ELF file once and remembers every
// resolution, so one Resolver serves all the closures of one Build. It is
// not safe for concurrent use.
type Resolver struct {
	cfg     ResolverConfig
	objects map[string]*elfObject // by real path
	// resolved memoises lookups that do not depend on the requesting
	// object (no RPATH/RUNPATH involved): key soname|class|machine.
	resolved map[string]resolution
	// realDirs memoises the symlink-free form of directories: a Build
	// resolves hundreds of files in a handful of directories.
	realDirs map[string]string
	// realFiles memoises realPath itself: every module's closure reaches
	// libc, whose PT_INTERP sends it through the loader's symlinks again.
	realFiles map[string]realFile
}

type realFile struct {
	path string
	err  error
}

type resolution struct {
	lib      Library
	searched []string
	ok       bool
}

// elfObject is the dynamic-linking view of one ELF file.
type elfObject struct {
	class   elf.Class
	machine elf.Machine
	needed  []string
	rpath   []string
	runpath []string
	interp  string
}

// NewResolver returns a Resolver following cfg.
func NewResolver(cfg ResolverConfig) *Resolver {
	return &Resolver{
		cfg:       cfg,
		objects:   make(map[string]*elfObject),
		resolved:  make(map[string]resolution),
		realDirs:  make(map[string]string),
		realFiles: make(map[string]realFile),
	}
}

// realPath is filepath.EvalSymlinks for a regular file, with the real
// form of its directory remembered. It fails for anything but a regular
// file (after symlinks).
func (r *Resolver) realPath(p string) (string, error) {
	p = filepath.Clean(p)
	if rf, ok := r.realFiles[p]; ok {
		return rf.path, rf.err
	}
	real, err := r.evalFile(p)
	r.realFiles[p] = realFile{real, err}
	return real, err
}

func (r *Resolver) evalFile(p string) (string, error) {
	dir, base := filepath.Split(p)
	realDir, ok := r.realDirs[dir]
	if !ok {
		var err error
		if realDir, err = filepath.EvalSymlinks(dir); err != nil {
			return "", err
		}
		r.realDirs[dir] = realDir
	}
	real := filepath.Join(realDir, base)
	st, err := os.Lstat(real)
	if err != nil {
		return "", err
	}
	if st.Mode()&os.ModeSymlink != 0 {
		if real, err = filepath.EvalSymlinks(real); err != nil {
			return "", err
		}
		if st, err = os.Stat(real); err != nil {
			return "", err
		}
	}
	if !st.Mode().IsRegular() {
		return "", &os.PathError{Op: "open", Path: p, Err: ErrNotELF}
	}
	return real, nil
}

// LibraryClosure returns the shared objects that the ELF files at paths
// need, resolved against the host's loader configuration. Any unresolvable
// dependency fails the whole call with an *UnresolvedError.
func LibraryClosure(paths []string) (Closure, error) {
	return NewResolver(HostResolverConfig()).Closure(paths...)
}

// IsELF reports whether the file at path starts with the ELF magic.
// Directories and unreadable files are not ELF.
func IsELF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return false
	}
	return string(magic[:]) == elf.ELFMAG
}

// object parses the ELF file at real path p, once.
func (r *Resolver) object(p string) (*elfObject, error) {
	if o, ok := r.objects[p]; ok {
		return o, nil
	}
	file, err := os.Open(p)
	if err != nil {
		return nil, &ELFError{Path: p, Err: err}
	}
	defer file.Close()
	var magic [4]byte
	if _, err := file.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil, &ELFError{Path: p, Err: ErrNotELF}
	}
	f, err := elf.NewFile(file)
	if err != nil {
		return nil, &ELFError{Path: p, Err: err}
	}
	o := &elfObject{class: f.Class, machine: f.Machine}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b, err := io.ReadAll(io.LimitReader(prog.Open(), 4096))
			if err != nil {
				return nil, &ELFError{Path: p, Err: err}
			}
			o.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if o.needed, o.rpath, o.runpath, err = dynamicStrings(f); err != nil {
		return nil, &ELFError{Path: p, Err: err}
	}
	r.objects[p] = o
	return o, nil
}

// dynamicStrings returns the DT_NEEDED names and the DT_RPATH and
// DT_RUNPATH directory lists. It reads the small .dynamic section once and
// then only the strings it refers to: elf.File.DynString would copy the
// whole .dynstr (3 MiB for libLLVM) on every call.
func dynamicStrings(f *elf.File) (needed, rpath, runpath []string, err error) {
	ds := f.SectionByType(elf.SHT_DYNAMIC)
	if ds == nil {
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_DYNAMIC {
				// Section headers stripped: take the slow, general path.
				needed, err = f.DynString(elf.DT_NEEDED)
				rp, _ := f.DynString(elf.DT_RPATH)
				rn, _ := f.DynString(elf.DT_RUNPATH)
				return needed, splitPathList(rp), splitPathList(rn), err
			}
		}
		// A static executable needs nothing.
		return nil, nil, nil, nil
	}
	if int(ds.Link) <= 0 || int(ds.Link) >= len(f.Sections) {
		return nil, nil, nil, fmt.Errorf("dynamic section links to string table %d of %d", ds.Link, len(f.Sections))
	}
	strtab := f.Sections[ds.Link]
	data, err := ds.Data()
	if err != nil {
		return nil, nil, nil, err
	}
	entSize := 16
	if f.Class == elf.ELFCLASS32 {
		entSize = 8
	}
	bo := f.ByteOrder
	for off := 0; off+entSize <= len(data); off += entSize {
		var tag elf.DynTag
		var val uint64
		if entSize == 16 {
			tag, val = elf.DynTag(int64(bo.Uint64(data[off:]))), bo.Uint64(data[off+8:])
		} else {
			tag, val = elf.DynTag(int32(bo.Uint32(data[off:]))), uint64(bo.Uint32(data[off+4:]))
		}
		if tag == elf.DT_NULL {
			break
		}
		if tag != elf.DT_NEEDED && tag != elf.DT_RPATH && tag != elf.DT_RUNPATH {
			continue
		}
		str, err := readCString(strtab, val)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s string at %d: %w", tag, val, err)
		}
		switch tag {
		case elf.DT_NEEDED:
			needed = append(needed, str)
		case elf.DT_RPATH:
			rpath = append(rpath, splitPathList([]string{str})...)
		case elf.DT_RUNPATH:
			runpath = append(runpath, splitPathList([]string{str})...)
		}
	}
	return needed, rpath, runpath, nil
}

// readCString reads the NUL-terminated string at off of a string table
// section, up to PATH_MAX bytes.
func readCString(sec *elf.Section, off uint64) (string, error) {
	const limit = 4096
	if off >= sec.Size {
		return "", errors.New("offset past the string table")
	}
	var buf []byte
	chunk := make([]byte, 256)
	for len(buf) < limit {
		n, err := sec.ReadAt(chunk, int64(off)+int64(len(buf)))
		if i := bytes.IndexByte(chunk[:n], 0); i >= 0 {
			return string(append(buf, chunk[:i]...)), nil
		}
		buf = append(buf, chunk[:n]...)
		if err != nil {
			return "", errors.New("unterminated string")
		}
	}
	return "", errors.New("string longer than PATH_MAX")
}

func splitPathList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, d := range strings.Split(v, ":") {
			if d != "" {
				out = append(out, d)
			}
		}
	}
	return out
}

// node is one object in the breadth-first walk: the path it was opened
// by, and the root object whose RPATH also applies to it.
type node struct {
	path     string // as opened by the loader
	real     string
	obj      *elfObject
	root     *elfObject
	rootReal string
}

// origin is what $ORIGIN expands to for n: the directory the object was
// opened from, except for the executable, whose origin the loader takes
// from /proc/self/exe, i.e. after symlinks.
func (n node) origin() string {
	if n.obj == n.root {
		return filepath.Dir(n.rootReal)
	}
	return filepath.Dir(n.path)
}

// Closure returns the libraries the ELF files at paths need. The program
// interpreter is included for executables (and any object with PT_INTERP).
func (r *Resolver) Closure(paths ...string) (Closure, error) {
	libs := map[string]Library{}
	var queue []node
	seen := map[string]bool{}
	for _, p := range paths {
		real, err := r.realPath(p)
		if err != nil {
			return Closure{}, &ELFError{Path: p, Err: err}
		}
		o, err := r.object(real)
		if err != nil {
			return Closure{}, err
		}
		if seen[real] {
			continue
		}
		seen[real] = true
		queue = append(queue, node{path: p, real: real, obj: o, root: o, rootReal: real})
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if n.obj.interp != "" {
			lib, err := r.interp(n)
			if err != nil {
				return Closure{}, err
			}
			if _, dup := libs[lib.Path]; !dup {
				libs[lib.Path] = lib
			}
			if !seen[lib.RealPath] {
				seen[lib.RealPath] = true
				// The loader is itself an ELF object with (normally) no
				// DT_NEEDED; walk it anyway rather than assume.
				o, err := r.object(lib.RealPath)
				if err != nil {
					return Closure{}, err
				}
				queue = append(queue, node{path: lib.Path, real: lib.RealPath, obj: o, root: n.root, rootReal: n.rootReal})
			}
		}
		for _, name := range n.obj.needed {
			res := r.resolve(n, name)
			if !res.ok {
				return Closure{}, &UnresolvedError{Object: n.path, Needed: name, Searched: res.searched}
			}
			if _, dup := libs[res.lib.Path]; !dup {
				libs[res.lib.Path] = res.lib
			}
			if seen[res.lib.RealPath] {
				continue
			}
			seen[res.lib.RealPath] = true
			o, err := r.object(res.lib.RealPath)
			if err != nil {
				return Closure{}, err
			}
			queue = append(queue, node{path: res.lib.Path, real: res.lib.RealPath, obj: o, root: n.root, rootReal: n.rootReal})
		}
	}
	out := Closure{Libraries: make([]Library, 0, len(libs))}
	for _, l := range libs {
		out.Libraries = append(out.Libraries, l)
	}
	sort.Slice(out.Libraries, func(i, j int) bool { return out.Libraries[i].Path < out.Libraries[j].Path })
	return out, nil
}

// interp resolves the program interpreter of n.
func (r *Resolver) interp(n node) (Library, error) {
	p := n.obj.interp
	if !filepath.IsAbs(p) {
		return Library{}, &UnresolvedError{Object: n.path, Needed: p}
	}
	real, err := r.realPath(p)
	if err != nil {
		return Library{}, &UnresolvedError{Object: n.path, Needed: p}
	}
	o, err := r.object(real)
	if err != nil {
		return Library{}, err
	}
	if o.class != n.obj.class || o.machine != n.obj.machine {
		return Library{}, &UnresolvedError{Object: n.path, Needed: p}
	}
	return Library{Path: filepath.Clean(p), RealPath: real, Interp: true}, nil
}

// resolve finds DT_NEEDED name for node n in the loader's order
// (elf/dl-load.c _dl_map_object): DT_RPATH of the object and of the root
// executable (only when the object has no DT_RUNPATH), DT_RUNPATH of the
// object, ld.so.cache, then the system directories. LD_LIBRARY_PATH is not
// consulted: the silo's postmaster runs without it.
func (r *Resolver) resolve(n node, name string) resolution {
	if strings.Contains(name, "/") {
		// A DT_NEEDED with a slash is opened as a path, no search.
		if filepath.IsAbs(name) {
			if lib, ok := r.candidate(n.obj, name, name); ok {
				return resolution{lib: lib, ok: true}
			}
		}
		return resolution{}
	}
	var dirs []string
	if len(n.obj.runpath) == 0 {
		dirs = append(dirs, expand(n.obj.rpath, n.obj, n.origin())...)
		if n.root != n.obj && len(n.root.runpath) == 0 {
			dirs = append(dirs, expand(n.root.rpath, n.root, filepath.Dir(n.rootReal))...)
		}
	}
	dirs = append(dirs, expand(n.obj.runpath, n.obj, n.origin())...)
	key := ""
	if len(dirs) == 0 {
		key = name + "|" + n.obj.class.String() + "|" + n.obj.machine.String()
		if res, ok := r.resolved[key]; ok {
			return res
		}
	}
	res := r.search(n.obj, name, dirs)
	if key != "" {
		r.resolved[key] = res
	}
	return res
}

func (r *Resolver) search(obj *elfObject, name string, dirs []string) resolution {
	var searched []string
	try := func(dir string) (Library, bool) {
		searched = append(searched, dir)
		return r.candidate(obj, name, filepath.Join(dir, name))
	}
	for _, d := range dirs {
		if lib, ok := try(d); ok {
			return resolution{lib: lib, searched: searched, ok: true}
		}
	}
	if r.cfg.Cache != nil {
		for _, e := range r.cfg.Cache.Lookup(name) {
			if e.HWCap != 0 {
				// CPU-specific variants are considered below, after the
				// baseline entry that works on every CPU.
				continue
			}
			if lib, ok := r.candidate(obj, name, e.Path); ok {
				return resolution{lib: lib, searched: searched, ok: true}
			}
		}
	} else {
		for _, d := range r.cfg.ConfDirs {
			if lib, ok := try(d); ok {
				return resolution{lib: lib, searched: searched, ok: true}
			}
		}
	}
	for _, d := range r.systemDirs(obj) {
		if lib, ok := try(d); ok {
			return resolution{lib: lib, searched: searched, ok: true}
		}
	}
	return resolution{searched: searched}
}

// HWCapVariants returns the CPU-specific cache entries for soname that are
// ELF files compatible with the library lib resolved to. The loader may
// prefer one of them on a CPU that supports it, so a plan binds them too.
func (r *Resolver) HWCapVariants(lib Library) []Library {
	if r.cfg.Cache == nil || lib.Soname == "" {
		return nil
	}
	base, err := r.object(lib.RealPath)
	if err != nil {
		return nil
	}
	var out []Library
	for _, e := range r.cfg.Cache.Lookup(lib.Soname) {
		if e.HWCap == 0 {
			continue
		}
		if v, ok := r.candidate(base, lib.Soname, e.Path); ok {
			out = append(out, v)
		}
	}
	return out
}

// candidate accepts path for a library requested by obj when it is an ELF
// file of the same class and machine, as the loader skips incompatible
// files and keeps searching.
func (r *Resolver) candidate(obj *elfObject, name, path string) (Library, bool) {
	real, err := r.realPath(path)
	if err != nil {
		return Library{}, false
	}
	o, err := r.object(real)
	if err != nil || o.class != obj.class || o.machine != obj.machine {
		return Library{}, false
	}
	return Library{Soname: name, Path: filepath.Clean(path), RealPath: real}, true
}

// expand substitutes the dynamic string tokens of RPATH/RUNPATH entries
// ($ORIGIN, $LIB, $PLATFORM, with or without braces) of object o, whose
// origin directory is origin. Entries that stay relative are dropped: the
// loader would resolve them against the working directory, which inside
// the silo is the data directory.
func expand(dirs []string, o *elfObject, origin string) []string {
	var out []string
	for _, d := range dirs {
		if strings.Contains(d, "$") {
			d = replaceToken(d, "ORIGIN", origin)
			d = replaceToken(d, "LIB", libToken(o))
			d = replaceToken(d, "PLATFORM", platformToken(o))
		}
		if filepath.IsAbs(d) {
			out = append(out, filepath.Clean(d))
		}
	}
	return out
}

func replaceToken(s, tok, val string) string {
	s = strings.ReplaceAll(s, "${"+tok+"}", val)
	return strings.ReplaceAll(s, "$"+tok, val)
}

// multiarchTriplet is the Debian multiarch directory name for an ELF ABI,
// empty when unknown.
func multiarchTriplet(class elf.Class, machine elf.Machine) string {
	switch machine {
	case elf.EM_X86_64:
		if class == elf.ELFCLASS32 {
			return "x86_64-linux-gnux32"
		}
		return "x86_64-linux-gnu"
	case elf.EM_386:
		return "i386-linux-gnu"
	case elf.EM_AARCH64:
		return "aarch64-linux-gnu"
	case elf.EM_ARM:
		return "arm-linux-gnueabihf"
	case elf.EM_PPC64:
		return "powerpc64le-linux-gnu"
	case elf.EM_S390:
		return "s390x-linux-gnu"
	case elf.EM_RISCV:
		return "riscv64-linux-gnu"
	}
	return ""
}

// libToken is what $LIB expands to: the multiarch directory on Debian,
// lib64 or lib elsewhere.
func libToken(o *elfObject) string {
	if t := multiarchTriplet(o.class, o.machine); t != "" && isDir(filepath.Join("/lib", t)) {
		return filepath.Join("lib", t)
	}
	if o.class == elf.ELFCLASS64 && isDir("/lib64") {
		return "lib64"
	}
	return "lib"
}

func platformToken(o *elfObject) string {
	switch o.machine {
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_386:
		return "i686"
	case elf.EM_AARCH64:
		return "aarch64"
	}
	return runtime.GOARCH
}

// systemDirs are the loader's built-in directories for obj's ABI.
func (r *Resolver) systemDirs(obj *elfObject) []string {
	if r.cfg.SystemDirs != nil {
		return r.cfg.SystemDirs
	}
	var dirs []string
	if t := multiarchTriplet(obj.class, obj.machine); t != "" {
		dirs = append(dirs, "/lib/"+t, "/usr/lib/"+t)
	}
	if obj.class == elf.ELFCLASS64 {
		dirs = append(dirs, "/lib64", "/usr/lib64")
	}
	return append(dirs, "/lib", "/usr/lib")
}
