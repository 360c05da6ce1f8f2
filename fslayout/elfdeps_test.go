package fslayout

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fakeHost is a temp tree of library files whose ELF view is registered
// directly with the resolver, so the loader's search order can be tested
// without building ELF files.
type fakeHost struct {
	t   *testing.T
	dir string
	r   *Resolver
}

func newFakeHost(t *testing.T, cfg func(dir string) ResolverConfig) *fakeHost {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &fakeHost{t: t, dir: dir, r: NewResolver(cfg(dir))}
}

// obj creates the file rel (relative to the tree) and registers its ELF
// view; a nil needed list means a leaf library.
func (h *fakeHost) obj(rel string, o elfObject) string {
	h.t.Helper()
	p := filepath.Join(h.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("not read: the view is registered"), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if o.class == 0 {
		o.class, o.machine = elf.ELFCLASS64, elf.EM_X86_64
	}
	h.r.objects[p] = &o
	return p
}

func (h *fakeHost) path(rel string) string { return filepath.Join(h.dir, rel) }

func cacheOf(entries ...LDCacheEntry) *LDCache {
	c, err := ParseLDCache(encodeLDCache(binary.LittleEndian, ldCacheEndianLE, entries))
	if err != nil {
		panic(err)
	}
	return c
}

func TestResolverSearchOrder(t *testing.T) {
	t.Parallel()
	withCache := func(rel ...string) func(string) ResolverConfig {
		return func(dir string) ResolverConfig {
			var es []LDCacheEntry
			for _, r := range rel {
				es = append(es, LDCacheEntry{Flags: 0x303, Name: filepath.Base(r), Path: filepath.Join(dir, r)})
			}
			return ResolverConfig{Cache: cacheOf(es...), SystemDirs: []string{filepath.Join(dir, "sys")}}
		}
	}
	tests := []struct {
		name string
		cfg  func(dir string) ResolverConfig
		// setup creates the tree and returns the root object's path.
		setup func(h *fakeHost) string
		want  []string // loader paths relative to the tree
		// unresolved is the DT_NEEDED name expected to fail.
		unresolved string
	}{
		{
			name: "cache before system dirs",
			cfg:  withCache("cache/libfoo.so.1"),
			setup: func(h *fakeHost) string {
				h.obj("cache/libfoo.so.1", elfObject{})
				h.obj("sys/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}})
			},
			want: []string{"cache/libfoo.so.1"},
		},
		{
			name: "system dirs after a cache miss",
			cfg:  withCache(),
			setup: func(h *fakeHost) string {
				h.obj("sys/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}})
			},
			want: []string{"sys/libfoo.so.1"},
		},
		{
			name: "rpath before cache",
			cfg:  withCache("cache/libfoo.so.1"),
			setup: func(h *fakeHost) string {
				h.obj("cache/libfoo.so.1", elfObject{})
				h.obj("rp/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}, rpath: []string{h.path("rp")}})
			},
			want: []string{"rp/libfoo.so.1"},
		},
		{
			name: "runpath disables rpath",
			cfg:  withCache(),
			setup: func(h *fakeHost) string {
				h.obj("rp/libfoo.so.1", elfObject{})
				h.obj("rn/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}, rpath: []string{h.path("rp")}, runpath: []string{h.path("rn")}})
			},
			want: []string{"rn/libfoo.so.1"},
		},
		{
			name: "runpath before cache",
			cfg:  withCache("cache/libfoo.so.1"),
			setup: func(h *fakeHost) string {
				h.obj("cache/libfoo.so.1", elfObject{})
				h.obj("rn/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}, runpath: []string{h.path("rn")}})
			},
			want: []string{"rn/libfoo.so.1"},
		},
		{
			name: "origin expands to the executable's directory",
			cfg:  withCache(),
			setup: func(h *fakeHost) string {
				h.obj("app/lib/libfoo.so.1", elfObject{})
				return h.obj("app/bin/prog", elfObject{needed: []string{"libfoo.so.1"}, runpath: []string{"${ORIGIN}/../lib", "relative/dropped"}})
			},
			want: []string{"app/lib/libfoo.so.1"},
		},
		{
			name: "origin of a library is its own directory",
			cfg:  withCache(),
			setup: func(h *fakeHost) string {
				h.obj("sys/libfoo.so.1", elfObject{needed: []string{"libbar.so.2"}, runpath: []string{"$ORIGIN/private"}})
				h.obj("sys/private/libbar.so.2", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}})
			},
			want: []string{"sys/libfoo.so.1", "sys/private/libbar.so.2"},
		},
		{
			name: "incompatible machine is skipped",
			cfg:  withCache("cache/libfoo.so.1"),
			setup: func(h *fakeHost) string {
				h.obj("cache/libfoo.so.1", elfObject{class: elf.ELFCLASS32, machine: elf.EM_386})
				h.obj("sys/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}})
			},
			want: []string{"sys/libfoo.so.1"},
		},
		{
			name: "executable's rpath applies to a library without runpath",
			cfg:  withCache(),
			setup: func(h *fakeHost) string {
				h.obj("sys/libfoo.so.1", elfObject{needed: []string{"libbar.so.2"}})
				h.obj("rp/libbar.so.2", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}, rpath: []string{h.path("rp")}})
			},
			want: []string{"rp/libbar.so.2", "sys/libfoo.so.1"},
		},
		{
			name: "executable's rpath does not apply to a library with runpath",
			cfg:  withCache(),
			setup: func(h *fakeHost) string {
				h.obj("sys/libfoo.so.1", elfObject{needed: []string{"libbar.so.2"}, runpath: []string{h.path("elsewhere")}})
				h.obj("rp/libbar.so.2", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}, rpath: []string{h.path("rp")}})
			},
			unresolved: "libbar.so.2",
		},
		{
			name: "ld.so.conf dirs searched only without a cache",
			cfg: func(dir string) ResolverConfig {
				return ResolverConfig{ConfDirs: []string{filepath.Join(dir, "conf")}, SystemDirs: []string{filepath.Join(dir, "sys")}}
			},
			setup: func(h *fakeHost) string {
				h.obj("conf/libfoo.so.1", elfObject{})
				h.obj("sys/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}})
			},
			want: []string{"conf/libfoo.so.1"},
		},
		{
			name: "ld.so.conf dirs ignored with a cache",
			cfg: func(dir string) ResolverConfig {
				return ResolverConfig{Cache: cacheOf(), ConfDirs: []string{filepath.Join(dir, "conf")}, SystemDirs: []string{filepath.Join(dir, "sys")}}
			},
			setup: func(h *fakeHost) string {
				h.obj("conf/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}})
			},
			unresolved: "libfoo.so.1",
		},
		{
			name: "interpreter and shared dependencies appear once",
			cfg:  withCache("sys/libc.so.6"),
			setup: func(h *fakeHost) string {
				ld := h.obj("sys/ld.so", elfObject{})
				h.obj("sys/libc.so.6", elfObject{})
				h.obj("sys/libfoo.so.1", elfObject{needed: []string{"libc.so.6"}})
				return h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1", "libc.so.6"}, interp: ld})
			},
			want: []string{"sys/ld.so", "sys/libc.so.6", "sys/libfoo.so.1"},
		},
		{
			name: "a needed path with a slash is opened as is",
			cfg:  withCache(),
			setup: func(h *fakeHost) string {
				p := h.obj("opt/libfoo.so.1", elfObject{})
				return h.obj("bin/prog", elfObject{needed: []string{p}})
			},
			want: []string{"opt/libfoo.so.1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newFakeHost(t, tt.cfg)
			root := tt.setup(h)
			c, err := h.r.Closure(root)
			if tt.unresolved != "" {
				var ue *UnresolvedError
				if !errors.As(err, &ue) || ue.Needed != tt.unresolved {
					t.Fatalf("err = %v, want unresolved %s", err, tt.unresolved)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range c.Libraries {
				rel, _ := filepath.Rel(h.dir, l.Path)
				got = append(got, rel)
				if l.RealPath != l.Path {
					t.Errorf("%s: real path %s, want the same (no symlinks in the tree)", l.Path, l.RealPath)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("closure = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestResolverUnresolvedNamesSearchedDirs(t *testing.T) {
	t.Parallel()
	h := newFakeHost(t, func(dir string) ResolverConfig {
		return ResolverConfig{Cache: cacheOf(), SystemDirs: []string{filepath.Join(dir, "sys")}}
	})
	root := h.obj("bin/prog", elfObject{needed: []string{"libpython3.11.so.1.0"}, runpath: []string{h.path("rn")}})
	_, err := h.r.Closure(root)
	var ue *UnresolvedError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want *UnresolvedError", err)
	}
	if ue.Object != root || !reflect.DeepEqual(ue.Searched, []string{h.path("rn"), h.path("sys")}) {
		t.Fatalf("error = %+v", ue)
	}
}

func TestResolverHWCapVariants(t *testing.T) {
	t.Parallel()
	h := newFakeHost(t, func(dir string) ResolverConfig {
		return ResolverConfig{Cache: cacheOf(
			LDCacheEntry{Flags: 0x303, Name: "libfoo.so.1", Path: filepath.Join(dir, "sys/glibc-hwcaps/x86-64-v3/libfoo.so.1"), HWCap: 1<<62 | 2},
			LDCacheEntry{Flags: 0x303, Name: "libfoo.so.1", Path: filepath.Join(dir, "sys/libfoo.so.1")},
		), SystemDirs: []string{}}
	})
	h.obj("sys/glibc-hwcaps/x86-64-v3/libfoo.so.1", elfObject{})
	h.obj("sys/libfoo.so.1", elfObject{})
	root := h.obj("bin/prog", elfObject{needed: []string{"libfoo.so.1"}})
	c, err := h.r.Closure(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Libraries) != 1 || c.Libraries[0].Path != h.path("sys/libfoo.so.1") {
		t.Fatalf("baseline = %+v, want sys/libfoo.so.1", c.Libraries)
	}
	v := h.r.HWCapVariants(c.Libraries[0])
	if len(v) != 1 || v[0].Path != h.path("sys/glibc-hwcaps/x86-64-v3/libfoo.so.1") {
		t.Fatalf("variants = %+v", v)
	}
}

// TestLibraryClosureHost checks the real resolver on the real postmaster:
// libc and the program interpreter are found, every RealPath is the
// symlink-free form of its Path, and a non-ELF file is refused.
func TestLibraryClosureHost(t *testing.T) {
	t.Parallel()
	inst := needInstall(t)
	c, err := LibraryClosure([]string{inst.Postmaster()})
	if err != nil {
		t.Fatal(err)
	}
	var libc, interp bool
	for _, l := range c.Libraries {
		real, err := filepath.EvalSymlinks(l.Path)
		if err != nil || real != l.RealPath {
			t.Errorf("%s: RealPath %s, EvalSymlinks %s (%v)", l.Path, l.RealPath, real, err)
		}
		libc = libc || l.Soname == "libc.so.6"
		interp = interp || l.Interp
	}
	if !libc || !interp {
		t.Fatalf("closure lacks libc (%v) or the interpreter (%v): %+v", libc, interp, c.Libraries)
	}
	txt := filepath.Join(t.TempDir(), "not-elf")
	if err := os.WriteFile(txt, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LibraryClosure([]string{txt}); !errors.Is(err, ErrNotELF) {
		t.Fatalf("closure of a script: err = %v, want ErrNotELF", err)
	}
	if IsELF(txt) || !IsELF(inst.Postmaster()) || IsELF(t.TempDir()) {
		t.Fatal("IsELF misjudges a script, the postmaster or a directory")
	}
}

// TestDynamicStringsMatchesDebugELF compares the targeted .dynamic reader
// with debug/elf's DynString on every file of the postmaster's closure and
// on the modules of pkglibdir.
func TestDynamicStringsMatchesDebugELF(t *testing.T) {
	t.Parallel()
	inst := needInstall(t)
	c, err := LibraryClosure([]string{inst.Postmaster()})
	if err != nil {
		t.Fatal(err)
	}
	files := []string{inst.Postmaster()}
	for _, l := range c.Libraries {
		files = append(files, l.RealPath)
	}
	mods, _ := filepath.Glob(filepath.Join(inst.PkgLibDir, "*.so"))
	files = append(files, mods...)
	for _, p := range files {
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		needed, rpath, runpath, err := dynamicStrings(f)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		wantNeeded, _ := f.DynString(elf.DT_NEEDED)
		rp, _ := f.DynString(elf.DT_RPATH)
		rn, _ := f.DynString(elf.DT_RUNPATH)
		f.Close()
		if !reflect.DeepEqual(needed, wantNeeded) || !reflect.DeepEqual(rpath, splitPathList(rp)) || !reflect.DeepEqual(runpath, splitPathList(rn)) {
			t.Errorf("%s: got %v %v %v, debug/elf %v %v %v", p, needed, rpath, runpath, wantNeeded, rp, rn)
		}
	}
}
