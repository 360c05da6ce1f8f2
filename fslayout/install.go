package fslayout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/silo-proxy/silo-proxy/config"
)

// Postmaster is the path of the server binary of the installation.
func (i Install) Postmaster() string { return filepath.Join(i.BinDir, "postgres") }

// Initdb is the path of initdb of the installation.
func (i Install) Initdb() string { return filepath.Join(i.BinDir, "initdb") }

// installEnv is what discovery reads from the host, replaceable in tests.
type installEnv struct {
	// lookPath finds pg_config on PATH.
	lookPath func(string) (string, error)
	// libRoot holds one directory per major version with a bin/ inside,
	// as Debian's postgresql-N packages install them.
	libRoot string
	// shareRoot is Debian's /usr/share/postgresql.
	shareRoot string
	// timeout bounds each pg_config or postgres --version run: a broken
	// wrapper script must not hang `silo-proxy check`.
	timeout time.Duration
}

func hostInstallEnv() installEnv {
	return installEnv{
		lookPath:  exec.LookPath,
		libRoot:   "/usr/lib/postgresql",
		shareRoot: "/usr/share/postgresql",
		timeout:   10 * time.Second,
	}
}

// FindInstall locates the PostgreSQL server installation named by the
// config's postgres.bindir.
//
// bindir "auto" asks `pg_config --bindir` (pg_config found on PATH) and uses
// its answer when that directory holds a postgres binary; otherwise it takes
// the newest /usr/lib/postgresql/N/bin that holds one (versions compared
// numerically, so 10 is newer than 9.6). Debian installs client-only
// versions (psql without postgres) in the same tree, hence the postgres
// check. An explicit directory is used as is.
//
// pkglibdir and sharedir come from <bindir>/pg_config when the installation
// has one, else from the pg_config on PATH if it reports the same bindir,
// else from the Debian layout (/usr/lib/postgresql/N/lib,
// /usr/share/postgresql/N) or the upstream one (<prefix>/lib/postgresql,
// <prefix>/share/postgresql). The major version comes from
// `postgres --version`.
//
// Nothing is cached: discovery runs programs, and the caller keeps the
// Install for as long as its configuration generation lives.
func FindInstall(bindir string) (Install, error) {
	return findInstall(bindir, hostInstallEnv())
}

func findInstall(bindir string, env installEnv) (Install, error) {
	if bindir == "" || bindir == config.BinDirAuto {
		var err error
		bindir, err = autoBinDir(env)
		if err != nil {
			return Install{}, err
		}
	}
	if !filepath.IsAbs(bindir) {
		return Install{}, &InstallError{BinDir: bindir, What: "bindir", Err: errors.New("not an absolute path")}
	}
	bindir = filepath.Clean(bindir)
	inst := Install{BinDir: bindir}
	for _, prog := range []string{"postgres", "initdb"} {
		if err := checkExecutable(filepath.Join(bindir, prog)); err != nil {
			return Install{}, &InstallError{BinDir: bindir, What: prog, Path: filepath.Join(bindir, prog), Err: err}
		}
	}
	if err := installDirs(&inst, env); err != nil {
		return Install{}, err
	}
	out, err := runProgram(env, inst.Postmaster(), "--version")
	if err != nil {
		return Install{}, &InstallError{BinDir: bindir, What: "version", Path: inst.Postmaster(), Err: err}
	}
	inst.Major, err = parseServerVersion(out)
	if err != nil {
		return Install{}, &InstallError{BinDir: bindir, What: "version", Path: inst.Postmaster(), Err: err}
	}
	return inst, nil
}

// autoBinDir implements bindir "auto".
func autoBinDir(env installEnv) (string, error) {
	if env.lookPath != nil {
		if pgc, err := env.lookPath("pg_config"); err == nil {
			if out, err := runProgram(env, pgc, "--bindir"); err == nil {
				dir := strings.TrimSpace(out)
				if filepath.IsAbs(dir) && checkExecutable(filepath.Join(dir, "postgres")) == nil {
					return filepath.Clean(dir), nil
				}
			}
		}
	}
	dirs, err := versionDirs(env.libRoot)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoInstall, err)
	}
	for _, d := range dirs {
		bin := filepath.Join(env.libRoot, d, "bin")
		if checkExecutable(filepath.Join(bin, "postgres")) == nil {
			return bin, nil
		}
	}
	if len(dirs) > 0 {
		// Only client packages: report the newest so the error names the
		// missing postgres binary.
		return filepath.Join(env.libRoot, dirs[0], "bin"), nil
	}
	return "", fmt.Errorf("%w: pg_config not on PATH and no %s/*/bin", ErrNoInstall, env.libRoot)
}

// versionDirs lists the entries of root that are version numbers ("15",
// "9.6"), newest first.
func versionDirs(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	type ver struct {
		name  string
		parts []int
	}
	var vs []ver
	for _, e := range ents {
		if p, ok := parseVersionNumbers(e.Name()); ok {
			vs = append(vs, ver{e.Name(), p})
		}
	}
	sort.Slice(vs, func(i, j int) bool {
		a, b := vs[i].parts, vs[j].parts
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return vs[i].name < vs[j].name
	})
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.name
	}
	return names, nil
}

// parseVersionNumbers parses "15" or "9.6" into its numeric components.
func parseVersionNumbers(s string) ([]int, bool) {
	if s == "" {
		return nil, false
	}
	fields := strings.Split(s, ".")
	parts := make([]int, 0, len(fields))
	for _, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || f == "" || f[0] == '+' || f[0] == '-' {
			return nil, false
		}
		parts = append(parts, n)
	}
	return parts, true
}

// installDirs fills PkgLibDir, ShareDir and SystemTZData.
func installDirs(inst *Install, env installEnv) error {
	var pgc string
	local := filepath.Join(inst.BinDir, "pg_config")
	if checkExecutable(local) == nil {
		pgc = local
	} else if env.lookPath != nil {
		if p, err := env.lookPath("pg_config"); err == nil {
			if out, err := runProgram(env, p, "--bindir"); err == nil && samePath(strings.TrimSpace(out), inst.BinDir) {
				pgc = p
			}
		}
	}
	if pgc != "" {
		out, err := runProgram(env, pgc, "--pkglibdir", "--sharedir", "--configure")
		if err != nil {
			return &InstallError{BinDir: inst.BinDir, What: "pg_config", Path: pgc, Err: err}
		}
		lines := strings.SplitN(out, "\n", 3)
		if len(lines) < 2 {
			return &InstallError{BinDir: inst.BinDir, What: "pg_config", Path: pgc, Err: fmt.Errorf("unexpected output %q", out)}
		}
		inst.PkgLibDir = strings.TrimSpace(lines[0])
		inst.ShareDir = strings.TrimSpace(lines[1])
		if len(lines) == 3 {
			inst.SystemTZData = systemTZData(lines[2])
		}
	} else {
		inst.PkgLibDir, inst.ShareDir = layoutDirs(inst.BinDir, env)
	}
	for _, d := range []struct{ what, path string }{{"pkglibdir", inst.PkgLibDir}, {"sharedir", inst.ShareDir}} {
		if d.path == "" || !filepath.IsAbs(d.path) {
			return &InstallError{BinDir: inst.BinDir, What: d.what, Path: d.path, Err: errors.New("cannot be determined: no pg_config and not a Debian or upstream layout")}
		}
		st, err := os.Stat(d.path)
		if err != nil {
			return &InstallError{BinDir: inst.BinDir, What: d.what, Path: d.path, Err: err}
		}
		if !st.IsDir() {
			return &InstallError{BinDir: inst.BinDir, What: d.what, Path: d.path, Err: errors.New("not a directory")}
		}
	}
	inst.PkgLibDir = filepath.Clean(inst.PkgLibDir)
	inst.ShareDir = filepath.Clean(inst.ShareDir)
	return nil
}

// layoutDirs derives pkglibdir and sharedir from the bindir's place in a
// known layout; empty strings when it fits none.
func layoutDirs(bindir string, env installEnv) (pkglib, share string) {
	// Debian: /usr/lib/postgresql/N/bin → /usr/lib/postgresql/N/lib and
	// /usr/share/postgresql/N.
	if filepath.Base(bindir) == "bin" {
		verDir := filepath.Dir(bindir)
		if filepath.Dir(verDir) == filepath.Clean(env.libRoot) {
			if _, ok := parseVersionNumbers(filepath.Base(verDir)); ok {
				return filepath.Join(verDir, "lib"), filepath.Join(env.shareRoot, filepath.Base(verDir))
			}
		}
		// Upstream `make install`: <prefix>/bin with <prefix>/lib/postgresql
		// (or <prefix>/lib when the prefix already names postgres) and the
		// same rule for share.
		prefix := verDir
		for _, c := range []struct{ lib, share string }{
			{filepath.Join(prefix, "lib", "postgresql"), filepath.Join(prefix, "share", "postgresql")},
			{filepath.Join(prefix, "lib"), filepath.Join(prefix, "share")},
		} {
			if isDir(c.lib) && isDir(c.share) && exists(filepath.Join(c.share, "postgres.bki")) {
				return c.lib, c.share
			}
		}
	}
	return "", ""
}

// systemTZData extracts --with-system-tzdata=DIR from pg_config
// --configure output: the server then reads time zones from DIR instead of
// sharedir/timezone, so the silo needs DIR.
func systemTZData(configure string) string {
	for _, f := range strings.Fields(configure) {
		f = strings.Trim(f, "'\"")
		if v, ok := strings.CutPrefix(f, "--with-system-tzdata="); ok && filepath.IsAbs(v) {
			return filepath.Clean(v)
		}
	}
	return ""
}

// parseServerVersion returns the major version from `postgres --version`
// output such as "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)":
// the first component since PostgreSQL 10, the first two before it
// ("9.6"); pre-release suffixes ("17beta1", "18devel") are dropped.
func parseServerVersion(out string) (string, error) {
	fields := strings.Fields(out)
	start := 0
	for i, f := range fields {
		if f == "(PostgreSQL)" {
			start = i + 1
			break
		}
	}
	for _, f := range fields[start:] {
		if f == "" || f[0] < '0' || f[0] > '9' {
			continue
		}
		var nums []int
		for _, part := range strings.Split(f, ".") {
			end := 0
			for end < len(part) && end < 9 && part[end] >= '0' && part[end] <= '9' {
				end++
			}
			if end == 0 {
				break
			}
			n, _ := strconv.Atoi(part[:end])
			nums = append(nums, n)
			if end < len(part) {
				break
			}
		}
		if len(nums) == 0 {
			continue
		}
		if nums[0] >= 10 {
			return strconv.Itoa(nums[0]), nil
		}
		if len(nums) < 2 {
			return "", fmt.Errorf("version %q lacks a minor number (needed before 10)", f)
		}
		return strconv.Itoa(nums[0]) + "." + strconv.Itoa(nums[1]), nil
	}
	return "", fmt.Errorf("no version number in %q", strings.TrimSpace(out))
}

func runProgram(env installEnv, prog string, args ...string) (string, error) {
	timeout := env.timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, msg)
		}
		return "", fmt.Errorf("%s %s: %w", prog, strings.Join(args, " "), err)
	}
	return string(out), nil
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return ErrNotExecutable
	}
	return nil
}

func samePath(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	if err1 != nil || err2 != nil {
		return filepath.Clean(a) == filepath.Clean(b)
	}
	return ra == rb
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}
