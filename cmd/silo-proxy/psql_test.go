package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/silo-proxy/silo-proxy/config"
)

// psqlTestConfig writes a config with a catch-all silo and an app silo
// below a temporary state_dir and loads it.
func psqlTestConfig(t *testing.T) (string, *config.Config) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	yaml := "state_dir: " + filepath.Join(dir, "state") + "\nbase_root_dir: " + filepath.Join(dir, "roots") + `
silos:
  - name: default
    databases: ["*"]
  - name: app
    databases: [app, app_reports]
`
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, cfg
}

// fakeSilo makes the silo look running: a listening socket in its run
// directory and a generated password file.
func fakeSilo(t *testing.T, cfg *config.Config, name, password string) {
	t.Helper()
	paths := cfg.Paths(name)
	if err := os.MkdirAll(paths.Run, 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(paths.Run, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := os.WriteFile(paths.PasswordFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPsqlUsageAndErrors(t *testing.T) {
	t.Parallel()
	path, cfg := psqlTestConfig(t)
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no arguments", nil, exitUsage, "usage: silo-proxy psql"},
		{"no silo", []string{"--config", path}, exitUsage, "usage: silo-proxy psql"},
		{"no config", []string{"app"}, exitUsage, "usage: silo-proxy psql"},
		{"bad flag", []string{"--nope", "app"}, exitUsage, "flag provided but not defined"},
		{"unknown silo", []string{"--config", path, "sales"}, exitFailure, `no silo named "sales"`},
		{"not running", []string{"--config", path, "app"}, exitFailure,
			"silo app is not running (no socket at " + filepath.Join(cfg.Paths("app").Run, ".s.PGSQL.5432") + "); start silo-proxy run first"},
		{"missing config file", []string{"--config", path + ".missing", "app"}, exitFailure, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			if code := cmdPsql(tc.args, &out, &errb); code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.want)
			}
		})
	}
}

func TestPsqlInvocation(t *testing.T) {
	t.Parallel()
	_, cfg := psqlTestConfig(t)
	if _, err := findPsql(cfg); err != nil {
		t.Skipf("no psql on this machine: %v", err)
	}
	fakeSilo(t, cfg, "app", "apppw")
	fakeSilo(t, cfg, "default", "defpw")
	environ := []string{"HOME=/root", "PGPASSWORD=stale", "PGHOST=elsewhere", "PGDATABASE=wrong", "TERM=xterm"}

	inv, err := psqlInvocation(cfg, "app", []string{"-c", "select 1"}, environ)
	if err != nil {
		t.Fatal(err)
	}
	wantArgv := []string{"psql", "-h", cfg.Paths("app").Run, "-p", "5432", "-U", "postgres", "-d", "app", "-c", "select 1"}
	if !slices.Equal(inv.argv, wantArgv) {
		t.Errorf("argv %q\nwant %q", inv.argv, wantArgv)
	}
	wantEnv := []string{"HOME=/root", "TERM=xterm", "PGPASSWORD=apppw"}
	if !slices.Equal(inv.env, wantEnv) {
		t.Errorf("env %q, want %q", inv.env, wantEnv)
	}
	if !filepath.IsAbs(inv.path) || filepath.Base(inv.path) != "psql" {
		t.Errorf("psql path %q", inv.path)
	}

	inv, err = psqlInvocation(cfg, "default", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := inv.argv[len(inv.argv)-1]; got != "postgres" {
		t.Errorf("catch-all silo connects to %q, want postgres", got)
	}
	if !slices.Contains(inv.env, "PGPASSWORD=defpw") {
		t.Errorf("env %q lacks the default silo's password", inv.env)
	}

	// The password file may be missing (the silo never bootstrapped here).
	os.Remove(cfg.Paths("app").PasswordFile)
	if _, err := psqlInvocation(cfg, "app", nil, nil); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("missing password file: %v", err)
	}
}
