package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// checkInvariants asserts what every *Config returned by Parse promises to
// the rest of silo-proxy, whatever the input was.
func checkInvariants(t *testing.T, cfg *Config) {
	t.Helper()
	if !filepath.IsAbs(cfg.Path) || !filepath.IsAbs(cfg.StateDir) || !filepath.IsAbs(cfg.BaseRootDir) {
		t.Fatalf("relative top-level path: %q %q %q", cfg.Path, cfg.StateDir, cfg.BaseRootDir)
	}
	if addressProblem(cfg.Listen.Address) != "" || addressProblem(cfg.Admin.Address) != "" {
		t.Fatalf("bad address accepted: %q %q", cfg.Listen.Address, cfg.Admin.Address)
	}
	if cfg.TLS.Mode != TLSDisable && (cfg.TLS.CertFile == "" || cfg.TLS.KeyFile == "") {
		t.Fatalf("tls %s without files", cfg.TLS.Mode)
	}
	if len(cfg.Silos) == 0 {
		t.Fatal("config without silos accepted")
	}
	names := map[string]bool{}
	dbs := map[string]bool{}
	for _, s := range cfg.Silos {
		if !siloNameRE.MatchString(s.Name) || names[s.Name] {
			t.Fatalf("bad or duplicate silo name %q", s.Name)
		}
		names[s.Name] = true
		if len(s.Databases) == 0 {
			t.Fatalf("silo %q has no databases", s.Name)
		}
		for _, db := range s.Databases {
			if databaseNameProblem(db) != "" || dbs[db] {
				t.Fatalf("bad or duplicate database %q", db)
			}
			dbs[db] = true
		}
		checkSettings(t, s.Name, s.Settings)
	}
	checkSettings(t, "defaults", cfg.Defaults)
}

func checkSettings(t *testing.T, who string, s Settings) {
	t.Helper()
	switch {
	case s.Layout != LayoutMinimal && s.Layout != LayoutStandard && s.Layout != LayoutEmpty:
		t.Fatalf("%s: layout %q", who, s.Layout)
	case s.Network != NetworkNone && s.Network != NetworkHost:
		t.Fatalf("%s: network %q", who, s.Network)
	case s.Seccomp != SeccompDefault && s.Seccomp != SeccompLog && s.Seccomp != SeccompOff:
		t.Fatalf("%s: seccomp %q", who, s.Seccomp)
	case s.MaxClients < 1 || s.StartTimeout <= 0 || s.IdleTimeout < 0:
		t.Fatalf("%s: max_clients %d start %v idle %v", who, s.MaxClients, s.StartTimeout, s.IdleTimeout)
	case s.Limits.MemoryBytes < 0 || s.Limits.Pids < 0 || s.Limits.CPU < 0 || (s.Limits.CPU != 0 && s.Limits.CPU < minCPU):
		t.Fatalf("%s: limits %+v", who, s.Limits)
	case s.SuperuserPasswordFile != "" && !filepath.IsAbs(s.SuperuserPasswordFile):
		t.Fatalf("%s: relative superuser_password_file %q", who, s.SuperuserPasswordFile)
	}
	targets := map[string]bool{}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || filepath.Clean(m.Source) != m.Source {
			t.Fatalf("%s: mount source %q not absolute and clean", who, m.Source)
		}
		if c, msg := cleanTarget(m.Target); msg != "" || c != m.Target {
			t.Fatalf("%s: mount target %q: %s", who, m.Target, msg)
		}
		if targets[m.Target] {
			t.Fatalf("%s: two mounts at %q", who, m.Target)
		}
		targets[m.Target] = true
		if m.Mode != MountRO && m.Mode != MountRW {
			t.Fatalf("%s: mount mode %q", who, m.Mode)
		}
		if m.Origin == "" {
			t.Fatalf("%s: mount %q without origin", who, m.Target)
		}
	}
	for k, v := range s.PostgresSettings {
		if !gucNameRE.MatchString(k) || k != strings.ToLower(k) || proxyOwnedSettings[k] != "" || strings.IndexByte(v, 0) >= 0 {
			t.Fatalf("%s: postgres setting %q=%q", who, k, v)
		}
	}
}

// checkProblems asserts that a rejection is a *ValidationError whose
// problems are all located in a file and carry a message.
func checkProblems(t *testing.T, err error) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error is %T, want *ValidationError: %v", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatal("ValidationError without problems")
	}
	for _, p := range ve.Problems {
		if p.File == "" || p.Message == "" || p.Line < 0 {
			t.Fatalf("problem without location or message: %+v", p)
		}
	}
}

func FuzzParse(f *testing.F) {
	seeds := []string{
		oneSilo,
		"",
		"silos: []",
		`listen:
  address: 127.0.0.1:6432
  unix_socket_dir: ./sock
admin: {address: ":9432"}
tls: {mode: disable}
postgres: {bindir: auto}
state_dir: ./.silo-state
base_root_dir: /run/silo-proxy/roots
defaults:
  layout: standard
  mounts:
    - {source: /usr, target: /usr, mode: ro}
    - {source: /tmp, target: /scratch, mode: rw}
  network: none
  max_clients: 100
  start_timeout: 30s
  idle_timeout: 0s
  limits: {memory: 512MiB, cpu: "0.5", pids: 256}
  seccomp: default
  postgres_settings: {shared_buffers: 32MB, "auto_explain.log_min_duration": 1s}
silos:
  - name: default
    databases: ["*"]
  - name: sales
    databases: [sales, sales_archive]
    mounts:
      - {source: /usr/share, target: /usr, mode: rw}
      - {source: /etc/hostname, target: /../etc/x}
    limits: {memory: 1GiB, pids: 200}
`,
		"defaults: &d {layout: empty}\nsilos:\n  - name: a\n    databases: [&x a, *x]\n    <<: *d\n",
		"silos:\n  - name: a\n    databases: [a]\n    mounts: [{source: /dev/null, target: /null}, {source: /, target: /proc}]\n",
		"silos:\n  - {name: Sales, databases: [\"*\", \"*\"], max_clients: -1, limits: {cpu: 0, memory: 1e9}}\n",
		"state_dir: [a\n",
		"a: b\n---\nc: d\n",
		"custom_fs_layout: /dev/null\nsilos:\n  - {name: a, databases: [a], whitelist_file: /etc/passwd}\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "config.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, path)
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned both a config and an error")
			}
			checkProblems(t, err)
			return
		}
		checkInvariants(t, cfg)
		// Loading is deterministic: the same input gives the same result.
		again, err := Parse(data, path)
		if err != nil || len(again.Silos) != len(cfg.Silos) {
			t.Fatalf("second Parse differs: %v", err)
		}
		for i := range cfg.Silos {
			if cfg.Silos[i].SandboxChanged(&again.Silos[i]) {
				t.Fatalf("silo %q differs between two parses of the same input", cfg.Silos[i].Name)
			}
		}
	})
}

func FuzzParseLayout(f *testing.F) {
	for _, s := range []string{
		"sales /etc/pgsilo/sales.wl\nDefault /etc/pgsilo/default.wl\n",
		"# comment\n\n  hr\t/wl # trailing\r\n",
		"sales\nsales a b\nsales rel\n* /x\nDEFAULT /a\ndefault /b\n",
		"\x00 /\n/ \x00\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseLayout(data, "layout")
		if err != nil {
			checkProblems(t, err)
		}
		seen := map[string]bool{}
		for _, e := range entries {
			if e.Line < 1 || !filepath.IsAbs(e.Whitelist) || filepath.Clean(e.Whitelist) != e.Whitelist {
				t.Fatalf("bad entry %+v", e)
			}
			if e.Default != (e.Database == "") {
				t.Fatalf("Default and Database disagree: %+v", e)
			}
			if !e.Default && (databaseNameProblem(e.Database) != "" || e.Database == CatchAll || strings.HasPrefix(e.Database, "#")) {
				t.Fatalf("bad database %+v", e)
			}
			if seen[e.Database] {
				t.Fatalf("duplicate database %q returned", e.Database)
			}
			seen[e.Database] = true
		}
	})
}

func FuzzParseWhitelist(f *testing.F) {
	for _, s := range []string{
		"/srv/sales /import ro\n/usr/share/zoneinfo /usr/share/zoneinfo ro # tz\n",
		"# c\n\n/a /b rw\r\n",
		"/a\n/a /b\n/a /b rx\na /b ro\n/a b ro\n/a /b ro x\n",
		"/a\x00 /b ro\n/\t/\tro\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		mounts, err := ParseWhitelistData(data, "wl")
		if err != nil {
			checkProblems(t, err)
		}
		for _, m := range mounts {
			if !filepath.IsAbs(m.Source) || filepath.Clean(m.Source) != m.Source || !filepath.IsAbs(m.Target) {
				t.Fatalf("non-absolute mount %+v", m)
			}
			if strings.IndexByte(m.Source, 0) >= 0 || strings.IndexByte(m.Target, 0) >= 0 {
				t.Fatalf("NUL in mount %+v", m)
			}
			if m.Mode != MountRO && m.Mode != MountRW {
				t.Fatalf("mode %q", m.Mode)
			}
			if !strings.HasPrefix(m.Origin, "wl:") {
				t.Fatalf("origin %q", m.Origin)
			}
		}
	})
}
