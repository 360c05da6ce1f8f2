package fslayout

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestPlanResolve(t *testing.T) {
	t.Parallel()
	host := t.TempDir()
	for _, d := range []string{"opt/sub", "shadow", "usrlib"} {
		mkdirs(t, filepath.Join(host, d))
	}
	for _, f := range []string{"opt/a", "opt/sub/deep", "usrlib/libc.so.6", "null"} {
		if err := os.WriteFile(filepath.Join(host, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("a", filepath.Join(host, "opt/b")))
	must(os.Symlink("/etc/passwd", filepath.Join(host, "opt/c")))
	must(os.Symlink("../../lib/libc.so.6", filepath.Join(host, "opt/sub/up")))

	plan := Plan{Ops: []MountOp{
		{Kind: OpFile, Target: "/etc/passwd", Content: []byte("postgres:x:1000:1000::/:/x\n"), Origin: "passwd"},
		{Kind: OpSymlink, Source: "usr/lib", Target: "/lib", Origin: "merged"},
		{Kind: OpSymlink, Source: "/loop2", Target: "/loop1"},
		{Kind: OpSymlink, Source: "/loop1", Target: "/loop2"},
		{Kind: OpBind, Source: filepath.Join(host, "opt"), Target: "/opt", ReadOnly: true, Origin: "opt"},
		{Kind: OpBind, Source: filepath.Join(host, "opt/sub"), Target: "/early/sub", Origin: "early"},
		{Kind: OpBind, Source: filepath.Join(host, "shadow"), Target: "/early", Origin: "shadowing"},
		{Kind: OpProc, Target: "/proc", Origin: "proc"},
		{Kind: OpTmpfs, Target: "/tmp", Origin: "tmp"},
		{Kind: OpDev, Source: filepath.Join(host, "null"), Target: "/dev/null", Origin: "null"},
		{Kind: OpBind, Source: filepath.Join(host, "usrlib/libc.so.6"), Target: "/usr/lib/libc.so.6", ReadOnly: true, Origin: "libc"},
	}}
	tests := []struct {
		in       string
		path     string
		hostPath string
		origin   string
		err      error
	}{
		{in: "/opt/a", path: "/opt/a", hostPath: filepath.Join(host, "opt/a"), origin: "opt"},
		{in: "/opt/b", path: "/opt/a", hostPath: filepath.Join(host, "opt/a"), origin: "opt"},
		{in: "/opt/c", path: "/etc/passwd", origin: "passwd"},
		{in: "/opt/sub/up", path: "/usr/lib/libc.so.6", hostPath: filepath.Join(host, "usrlib/libc.so.6"), origin: "libc"},
		{in: "/lib/libc.so.6", path: "/usr/lib/libc.so.6", hostPath: filepath.Join(host, "usrlib/libc.so.6"), origin: "libc"},
		{in: "/usr/lib", path: "/usr/lib"},
		{in: "/", path: "/"},
		{in: "/proc/self/status", path: "/proc/self/status", origin: "proc"},
		{in: "/dev/null", path: "/dev/null", hostPath: filepath.Join(host, "null"), origin: "null"},
		{in: "/tmp", path: "/tmp", origin: "tmp"},
		{in: "/early", path: "/early", hostPath: filepath.Join(host, "shadow"), origin: "shadowing"},
		{in: "/early/sub", err: fs.ErrNotExist},
		{in: "/etc/passwd/x", err: errNotDir},
		{in: "/opt/a/x", err: errNotDir},
		{in: "/bin/sh", err: fs.ErrNotExist},
		{in: "/usr/bin", err: fs.ErrNotExist},
		{in: "/opt/missing", err: fs.ErrNotExist},
		{in: "/loop1/x", err: errLoop},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			r, err := plan.Resolve(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Resolve(%s) = %+v, %v; want %v", tt.in, r, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Path != tt.path || r.HostPath != tt.hostPath || r.Op.Origin != tt.origin {
				t.Fatalf("Resolve(%s) = {%s %s %q}, want {%s %s %q}", tt.in, r.Path, r.HostPath, r.Op.Origin, tt.path, tt.hostPath, tt.origin)
			}
		})
	}
}

func TestTargetLessPutsParentsFirst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		less bool
	}{
		{"/usr", "/usr/lib", true},
		{"/usr/lib", "/usr", false},
		{"/usr/lib/x", "/usr/lib-x", true},
		{"/usr/lib-x", "/usr/lib/x", false},
		{"/a", "/b", true},
		{"/a", "/a", false},
	}
	for _, tt := range tests {
		if got := targetLess(tt.a, tt.b); got != tt.less {
			t.Errorf("targetLess(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
}
