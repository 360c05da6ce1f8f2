package fslayout

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needInstall returns the host's PostgreSQL installation or skips.
func needInstall(t testing.TB) Install {
	t.Helper()
	inst, err := FindInstall("auto")
	if err != nil {
		t.Skipf("no PostgreSQL server installation: %v", err)
	}
	return inst
}

func writeScript(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
}

// fakeServer puts scripts standing in for postgres and initdb in bindir.
func fakeServer(t *testing.T, bindir, version string) {
	t.Helper()
	writeScript(t, filepath.Join(bindir, "postgres"), fmt.Sprintf("echo 'postgres (PostgreSQL) %s'", version), 0o755)
	writeScript(t, filepath.Join(bindir, "initdb"), "exit 0", 0o755)
}

// fakePGConfig writes a pg_config that answers like the real one: one
// line per requested option, in order.
func fakePGConfig(t *testing.T, p, bindir, pkglib, share string) {
	t.Helper()
	writeScript(t, p, fmt.Sprintf(`for a in "$@"; do case $a in
--bindir) echo %s;;
--pkglibdir) echo %s;;
--sharedir) echo %s;;
--configure) echo "'--prefix=/usr' '--with-system-tzdata=/usr/share/zoneinfo' '--with-icu'";;
*) echo "bad option $a" >&2; exit 1;;
esac; done`, bindir, pkglib, share), 0o755)
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func noLookPath(string) (string, error) { return "", exec.ErrNotFound }

func TestFindInstallFake(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("fake installations are shell scripts and need /bin/sh")
	}
	tests := []struct {
		name string
		// setup builds the tree under dir and returns the bindir argument
		// and the discovery environment.
		setup   func(t *testing.T, dir string) (string, installEnv)
		want    func(dir string) Install
		wantErr string // InstallError.What, or "noinstall"
		notExec bool
	}{
		{
			name: "explicit bindir with its own pg_config",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "pg/bin")
				fakeServer(t, bin, "16.4")
				mkdirs(t, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				fakePGConfig(t, filepath.Join(bin, "pg_config"), bin, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				return bin, installEnv{lookPath: noLookPath}
			},
			want: func(dir string) Install {
				return Install{BinDir: filepath.Join(dir, "pg/bin"), PkgLibDir: filepath.Join(dir, "pg/lib"), ShareDir: filepath.Join(dir, "pg/share"), Major: "16", SystemTZData: "/usr/share/zoneinfo"}
			},
		},
		{
			name: "pg_config on PATH used only when its bindir matches",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "pg/bin")
				fakeServer(t, bin, "9.6.24")
				mkdirs(t, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				pgc := filepath.Join(dir, "path/pg_config")
				fakePGConfig(t, pgc, bin, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				return bin, installEnv{lookPath: func(string) (string, error) { return pgc, nil }}
			},
			want: func(dir string) Install {
				return Install{BinDir: filepath.Join(dir, "pg/bin"), PkgLibDir: filepath.Join(dir, "pg/lib"), ShareDir: filepath.Join(dir, "pg/share"), Major: "9.6", SystemTZData: "/usr/share/zoneinfo"}
			},
		},
		{
			name: "Debian layout without pg_config",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "usr/lib/postgresql/14/bin")
				fakeServer(t, bin, "14.13 (Debian 14.13-1)")
				mkdirs(t, filepath.Join(dir, "usr/lib/postgresql/14/lib"), filepath.Join(dir, "usr/share/postgresql/14"))
				// A pg_config of another version on PATH must be ignored.
				pgc := filepath.Join(dir, "path/pg_config")
				fakePGConfig(t, pgc, "/elsewhere/bin", "/elsewhere/lib", "/elsewhere/share")
				return bin, installEnv{lookPath: func(string) (string, error) { return pgc, nil }, libRoot: filepath.Join(dir, "usr/lib/postgresql"), shareRoot: filepath.Join(dir, "usr/share/postgresql")}
			},
			want: func(dir string) Install {
				return Install{BinDir: filepath.Join(dir, "usr/lib/postgresql/14/bin"), PkgLibDir: filepath.Join(dir, "usr/lib/postgresql/14/lib"), ShareDir: filepath.Join(dir, "usr/share/postgresql/14"), Major: "14"}
			},
		},
		{
			name: "upstream layout without pg_config",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "opt/pg/bin")
				fakeServer(t, bin, "17beta1")
				mkdirs(t, filepath.Join(dir, "opt/pg/lib/postgresql"), filepath.Join(dir, "opt/pg/share/postgresql"))
				writeScript(t, filepath.Join(dir, "opt/pg/share/postgresql/postgres.bki"), "", 0o644)
				return bin, installEnv{lookPath: noLookPath, libRoot: filepath.Join(dir, "none")}
			},
			want: func(dir string) Install {
				return Install{BinDir: filepath.Join(dir, "opt/pg/bin"), PkgLibDir: filepath.Join(dir, "opt/pg/lib/postgresql"), ShareDir: filepath.Join(dir, "opt/pg/share/postgresql"), Major: "17"}
			},
		},
		{
			name: "auto picks the newest version that has a server",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				root := filepath.Join(dir, "usr/lib/postgresql")
				for _, v := range []string{"9.6", "10", "15"} {
					fakeServer(t, filepath.Join(root, v, "bin"), v+".1")
					mkdirs(t, filepath.Join(root, v, "lib"), filepath.Join(dir, "usr/share/postgresql", v))
				}
				// 16 is client-only, as postgresql-client-16 installs it.
				writeScript(t, filepath.Join(root, "16/bin/psql"), "", 0o755)
				mkdirs(t, filepath.Join(root, "not-a-version"))
				return "auto", installEnv{lookPath: noLookPath, libRoot: root, shareRoot: filepath.Join(dir, "usr/share/postgresql")}
			},
			want: func(dir string) Install {
				return Install{BinDir: filepath.Join(dir, "usr/lib/postgresql/15/bin"), PkgLibDir: filepath.Join(dir, "usr/lib/postgresql/15/lib"), ShareDir: filepath.Join(dir, "usr/share/postgresql/15"), Major: "15"}
			},
		},
		{
			name: "auto asks pg_config on PATH first",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "pg/bin")
				fakeServer(t, bin, "13.2")
				mkdirs(t, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				pgc := filepath.Join(dir, "path/pg_config")
				fakePGConfig(t, pgc, bin, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				return "", installEnv{lookPath: func(string) (string, error) { return pgc, nil }, libRoot: filepath.Join(dir, "none")}
			},
			want: func(dir string) Install {
				return Install{BinDir: filepath.Join(dir, "pg/bin"), PkgLibDir: filepath.Join(dir, "pg/lib"), ShareDir: filepath.Join(dir, "pg/share"), Major: "13", SystemTZData: "/usr/share/zoneinfo"}
			},
		},
		{
			name: "auto with nothing installed",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				return "auto", installEnv{lookPath: noLookPath, libRoot: filepath.Join(dir, "none")}
			},
			wantErr: "noinstall",
		},
		{
			name: "auto with only a client package names the missing postgres",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				writeScript(t, filepath.Join(dir, "usr/lib/postgresql/16/bin/psql"), "", 0o755)
				return "auto", installEnv{lookPath: noLookPath, libRoot: filepath.Join(dir, "usr/lib/postgresql")}
			},
			wantErr: "postgres",
		},
		{
			name: "missing initdb",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "pg/bin")
				fakeServer(t, bin, "16.4")
				os.Remove(filepath.Join(bin, "initdb"))
				return bin, installEnv{lookPath: noLookPath}
			},
			wantErr: "initdb",
		},
		{
			name: "postgres not executable",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "pg/bin")
				fakeServer(t, bin, "16.4")
				os.Chmod(filepath.Join(bin, "postgres"), 0o644)
				return bin, installEnv{lookPath: noLookPath}
			},
			wantErr: "postgres",
			notExec: true,
		},
		{
			name: "no pg_config and an unknown layout",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "somewhere/bin")
				fakeServer(t, bin, "16.4")
				return bin, installEnv{lookPath: noLookPath, libRoot: filepath.Join(dir, "none")}
			},
			wantErr: "pkglibdir",
		},
		{
			name: "pkglibdir reported but absent",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "pg/bin")
				fakeServer(t, bin, "16.4")
				mkdirs(t, filepath.Join(dir, "pg/share"))
				fakePGConfig(t, filepath.Join(bin, "pg_config"), bin, filepath.Join(dir, "pg/gone"), filepath.Join(dir, "pg/share"))
				return bin, installEnv{lookPath: noLookPath}
			},
			wantErr: "pkglibdir",
		},
		{
			name: "unparsable version",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				bin := filepath.Join(dir, "pg/bin")
				fakeServer(t, bin, "unknown")
				mkdirs(t, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				fakePGConfig(t, filepath.Join(bin, "pg_config"), bin, filepath.Join(dir, "pg/lib"), filepath.Join(dir, "pg/share"))
				return bin, installEnv{lookPath: noLookPath}
			},
			wantErr: "version",
		},
		{
			name: "relative bindir",
			setup: func(t *testing.T, dir string) (string, installEnv) {
				return "pg/bin", installEnv{lookPath: noLookPath}
			},
			wantErr: "bindir",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir, err := filepath.EvalSymlinks(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			bindir, env := tt.setup(t, dir)
			env.timeout = time.Minute
			got, err := findInstall(bindir, env)
			if tt.wantErr != "" {
				if tt.wantErr == "noinstall" {
					if !errors.Is(err, ErrNoInstall) {
						t.Fatalf("err = %v, want ErrNoInstall", err)
					}
					return
				}
				var ie *InstallError
				if !errors.As(err, &ie) || ie.What != tt.wantErr {
					t.Fatalf("err = %v, want InstallError about %s", err, tt.wantErr)
				}
				if tt.notExec && !errors.Is(err, ErrNotExecutable) {
					t.Fatalf("err = %v, want ErrNotExecutable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want(dir); got != want {
				t.Fatalf("install = %+v\nwant      %+v", got, want)
			}
		})
	}
}

// TestFindInstallReal checks discovery against the host installation and
// against what its own pg_config says.
func TestFindInstallReal(t *testing.T) {
	t.Parallel()
	inst := needInstall(t)
	for _, p := range []string{inst.Postmaster(), inst.Initdb()} {
		if err := checkExecutable(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	explicit, err := FindInstall(inst.BinDir)
	if err != nil {
		t.Fatal(err)
	}
	if explicit != inst {
		t.Fatalf("explicit bindir gives %+v, auto gives %+v", explicit, inst)
	}
	pgc := filepath.Join(inst.BinDir, "pg_config")
	if _, err := os.Stat(pgc); err != nil {
		t.Skipf("no %s to compare with", pgc)
	}
	out, err := exec.Command(pgc, "--pkglibdir", "--sharedir", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if lines[0] != inst.PkgLibDir || lines[1] != inst.ShareDir {
		t.Fatalf("pg_config says %q, install %+v", lines, inst)
	}
	if !strings.HasPrefix(strings.TrimPrefix(lines[2], "PostgreSQL "), inst.Major+".") {
		t.Fatalf("pg_config --version %q, major %q", lines[2], inst.Major)
	}
}

func TestParseServerVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		err      bool
	}{
		{"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "15", false},
		{"postgres (PostgreSQL) 9.6.24", "9.6", false},
		{"postgres (PostgreSQL) 10.0", "10", false},
		{"postgres (PostgreSQL) 17beta1", "17", false},
		{"postgres (PostgreSQL) 18devel", "18", false},
		{"postgres (PostgreSQL) 16rc1 (Ubuntu 16~rc1-1)", "16", false},
		{"postgres (EnterpriseDB) 14.2", "14", false},
		{"postgres (PostgreSQL) 9", "", true},
		{"postgres (PostgreSQL) devel", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseServerVersion(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("parseServerVersion(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func FuzzParseServerVersion(f *testing.F) {
	f.Add("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)")
	f.Add("postgres (PostgreSQL) 9.6.24")
	f.Add("postgres (PostgreSQL) 17beta1")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseServerVersion(in)
		if err != nil {
			return
		}
		parts, ok := parseVersionNumbers(got)
		if !ok || len(parts) == 0 || len(parts) > 2 || (len(parts) == 1) != (parts[0] >= 10) {
			t.Fatalf("parseServerVersion(%q) = %q: not a major version", in, got)
		}
	})
}

func TestVersionDirsNumericOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mkdirs(t, filepath.Join(dir, "9.6"), filepath.Join(dir, "10"), filepath.Join(dir, "9.5"), filepath.Join(dir, "16"), filepath.Join(dir, "x1"), filepath.Join(dir, "-1"))
	got, err := versionDirs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != "16 10 9.6 9.5" {
		t.Fatalf("versionDirs = %v", got)
	}
}

func TestSystemTZData(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"'--prefix=/usr' '--with-system-tzdata=/usr/share/zoneinfo' '--with-icu'": "/usr/share/zoneinfo",
		"--with-system-tzdata=/opt/tz/":                                           "/opt/tz",
		"'--with-system-tzdata=relative'":                                         "",
		"'--prefix=/usr'":                                                         "",
	}
	for in, want := range tests {
		if got := systemTZData(in); got != want {
			t.Errorf("systemTZData(%q) = %q, want %q", in, got, want)
		}
	}
}
