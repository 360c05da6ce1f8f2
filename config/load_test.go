package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultsWhenKeysAreAbsent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.mustLoad(t, oneSilo)

	if want := filepath.Join(f.dir, "config.yaml"); cfg.Path != want {
		t.Errorf("Path = %q, want %q", cfg.Path, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen.address", cfg.Listen.Address, "127.0.0.1:6432"},
		{"listen.unix_socket_dir", cfg.Listen.UnixSocketDir, ""},
		{"admin.address", cfg.Admin.Address, "127.0.0.1:9432"},
		{"tls.mode", cfg.TLS.Mode, TLSDisable},
		{"postgres.bindir", cfg.Postgres.BinDir, BinDirAuto},
		{"state_dir", cfg.StateDir, "/var/lib/silo-proxy"},
		{"base_root_dir", cfg.BaseRootDir, "/run/silo-proxy/roots"},
		{"custom_fs_layout", cfg.CustomFSLayout, ""},
		{"defaults.layout", cfg.Defaults.Layout, LayoutMinimal},
		{"defaults.network", cfg.Defaults.Network, NetworkNone},
		{"defaults.max_clients", cfg.Defaults.MaxClients, 100},
		{"defaults.start_timeout", cfg.Defaults.StartTimeout, 30 * time.Second},
		{"defaults.idle_timeout", cfg.Defaults.IdleTimeout, time.Duration(0)},
		{"defaults.seccomp", cfg.Defaults.Seccomp, SeccompDefault},
		{"defaults.limits", cfg.Defaults.Limits, Limits{}},
		{"defaults.mounts", len(cfg.Defaults.Mounts), 0},
		{"defaults.postgres_settings", len(cfg.Defaults.PostgresSettings), 0},
		{"silo inherits", cfg.Silos[0].Settings.Layout, LayoutMinimal},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	s := cfg.Silos[0]
	if s.Name != "app" || !reflect.DeepEqual(s.Databases, []string{"app"}) || s.Origin != filepath.Join(f.dir, "config.yaml")+":3" {
		t.Errorf("silo = %+v", s)
	}
	if s.PostgresSettings == nil || s.Mounts == nil {
		t.Errorf("silo maps/slices should be non-nil so callers can range and compare: %+v", s.Settings)
	}
}

func TestEmptyValuesMeanDefault(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.mustLoad(t, `
listen:
  address:
  unix_socket_dir: ""
state_dir: ""
custom_fs_layout: ""
defaults:
  limits: {memory: "", cpu: "", pids: 0}
`+oneSilo)
	if cfg.Listen.Address != DefaultListenAddress || cfg.StateDir != DefaultStateDir || cfg.CustomFSLayout != "" || cfg.Defaults.Limits != (Limits{}) {
		t.Errorf("empty values did not fall back to defaults: %+v", cfg)
	}
}

func TestInheritance(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := os.Mkdir(filepath.Join(f.dir, "src2"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := f.mustLoad(t, `
defaults:
  layout: standard
  network: none
  max_clients: 50
  start_timeout: 10s
  idle_timeout: 5m
  seccomp: log
  superuser_password_file: password
  limits: {memory: 512MiB, cpu: "0.5", pids: 100}
  postgres_settings: {work_mem: 4MB, shared_buffers: 32MB}
  mounts:
    - {source: {{dir}}/src, target: /shared}
    - {source: {{dir}}/src, target: /data, mode: ro}
silos:
  - name: plain
    databases: [plain]
  - name: custom
    databases: [custom]
    layout: empty
    max_clients: 7
    idle_timeout: 0s
    superuser_password_file: ""
    limits: {memory: 1GiB}
    postgres_settings: {Work_Mem: 64MB, log_min_duration_statement: 250ms}
    mounts:
      - {source: {{dir}}/src2, target: /data, mode: rw}
      - {source: {{dir}}/file, target: /etc/custom.conf}
`)
	plain, custom := cfg.Silo("plain"), cfg.Silo("custom")
	if plain == nil || custom == nil {
		t.Fatalf("silos missing: %+v", cfg.Silos)
	}
	if !reflect.DeepEqual(plain.Settings, cfg.Defaults) {
		t.Errorf("a silo without overrides must equal defaults:\n got %+v\nwant %+v", plain.Settings, cfg.Defaults)
	}

	t.Run("scalars are replaced", func(t *testing.T) {
		if custom.Layout != LayoutEmpty || custom.MaxClients != 7 || custom.IdleTimeout != 0 {
			t.Errorf("overrides lost: %+v", custom.Settings)
		}
		if custom.Network != NetworkNone || custom.StartTimeout != 10*time.Second || custom.Seccomp != SeccompLog {
			t.Errorf("inherited scalars lost: %+v", custom.Settings)
		}
		if custom.SuperuserPasswordFile != "" {
			t.Errorf("an explicit empty superuser_password_file must clear the default, got %q", custom.SuperuserPasswordFile)
		}
		if want := filepath.Join(f.dir, "password"); plain.SuperuserPasswordFile != want {
			t.Errorf("plain superuser_password_file = %q, want %q", plain.SuperuserPasswordFile, want)
		}
	})
	t.Run("limits merge per field", func(t *testing.T) {
		want := Limits{MemoryBytes: 1 << 30, CPU: 0.5, Pids: 100}
		if custom.Limits != want {
			t.Errorf("limits = %+v, want %+v", custom.Limits, want)
		}
	})
	t.Run("postgres_settings merge per key", func(t *testing.T) {
		want := map[string]string{"work_mem": "64MB", "shared_buffers": "32MB", "log_min_duration_statement": "250ms"}
		if !reflect.DeepEqual(custom.PostgresSettings, want) {
			t.Errorf("postgres_settings = %v, want %v", custom.PostgresSettings, want)
		}
		if cfg.Defaults.PostgresSettings["work_mem"] != "4MB" {
			t.Errorf("a silo override leaked into defaults: %v", cfg.Defaults.PostgresSettings)
		}
	})
	t.Run("mounts append with same-target replacement", func(t *testing.T) {
		type m struct {
			src, dst string
			mode     MountMode
		}
		var got []m
		for _, x := range custom.Mounts {
			got = append(got, m{x.Source, x.Target, x.Mode})
		}
		want := []m{
			{filepath.Join(f.dir, "src"), "/shared", MountRO},
			{filepath.Join(f.dir, "src2"), "/data", MountRW},
			{filepath.Join(f.dir, "file"), "/etc/custom.conf", MountRO},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("mounts = %+v, want %+v", got, want)
		}
		if len(cfg.Defaults.Mounts) != 2 || cfg.Defaults.Mounts[1].Mode != MountRO {
			t.Errorf("a silo mount leaked into defaults: %+v", cfg.Defaults.Mounts)
		}
		if !strings.HasSuffix(custom.Mounts[1].Origin, "config.yaml:27") {
			t.Errorf("replacing mount origin = %q, want config.yaml:27", custom.Mounts[1].Origin)
		}
	})
}

func TestRelativePathsResolveAgainstConfigDir(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.write(t, "etc/wl", "{{dir}}/src /src ro\n")
	f.write(t, "etc/pw", "secret\n")
	f.write(t, "etc/tls/cert.pem", "x")
	f.write(t, "etc/tls/key.pem", "x")
	f.write(t, "etc/layout", "reports {{dir}}/etc/wl\n")
	// The config lives in a subdirectory and the test's working directory
	// is elsewhere, so only resolution against the config's own directory
	// can find these files.
	path := f.write(t, "etc/silo.yaml", `
listen:
  unix_socket_dir: ./sock
tls:
  mode: require
  cert_file: tls/cert.pem
  key_file: ./tls/../tls/key.pem
state_dir: ./.silo-state
base_root_dir: ../roots
custom_fs_layout: layout
defaults:
  superuser_password_file: pw
silos:
  - name: app
    databases: [app]
    whitelist_file: wl
`)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(f.dir, "etc")
	got := map[string]string{
		"unix_socket_dir":         cfg.Listen.UnixSocketDir,
		"cert_file":               cfg.TLS.CertFile,
		"key_file":                cfg.TLS.KeyFile,
		"state_dir":               cfg.StateDir,
		"base_root_dir":           cfg.BaseRootDir,
		"custom_fs_layout":        cfg.CustomFSLayout,
		"superuser_password_file": cfg.Defaults.SuperuserPasswordFile,
		"whitelist_file":          cfg.Silo("app").WhitelistFile,
	}
	want := map[string]string{
		"unix_socket_dir":         filepath.Join(etc, "sock"),
		"cert_file":               filepath.Join(etc, "tls/cert.pem"),
		"key_file":                filepath.Join(etc, "tls/key.pem"),
		"state_dir":               filepath.Join(etc, ".silo-state"),
		"base_root_dir":           filepath.Join(f.dir, "roots"),
		"custom_fs_layout":        filepath.Join(etc, "layout"),
		"superuser_password_file": filepath.Join(etc, "pw"),
		"whitelist_file":          filepath.Join(etc, "wl"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("resolved paths:\n got %v\nwant %v", got, want)
	}
	if p := cfg.Paths("app"); p.Data != filepath.Join(etc, ".silo-state/silos/app/data") || p.Root != filepath.Join(f.dir, "roots/app") {
		t.Errorf("Paths(app) = %+v", p)
	}
	if len(cfg.Silo("app").Mounts) != 1 || cfg.Silo("app").Mounts[0].Source != filepath.Join(f.dir, "src") {
		t.Errorf("whitelist mounts not appended: %+v", cfg.Silo("app").Mounts)
	}
}

func TestAllProblemsAreCollected(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	content := `silos:
  - name: app
    databases: [app]
    max_clients: 0
    layout: huge
  - name: app
    databases: [other]
`
	_, err := f.load(t, content)
	ps := problemsOf(t, err)
	if len(ps) != 3 {
		t.Fatalf("got %d problems, want 3:\n%v", len(ps), err)
	}
	wantLines := []int{4, 5, 6}
	for i, p := range ps {
		if p.Line != wantLines[i] {
			t.Errorf("problem %d at line %d, want %d (sorted by line):\n%v", i, p.Line, wantLines[i], err)
		}
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 3 {
		t.Errorf("Error() has %d lines, want one per problem:\n%v", len(lines), err)
	}
}

func TestProblemsAcrossFilesSortConfigFirst(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.write(t, "bad.wl", "{{dir}}/src /a rx\n")
	_, err := f.load(t, `silos:
  - name: app
    databases: [app]
    whitelist_file: bad.wl
    max_clients: -1
`)
	ps := problemsOf(t, err)
	if len(ps) != 2 || filepath.Base(ps[0].File) != "config.yaml" || filepath.Base(ps[1].File) != "bad.wl" {
		t.Fatalf("problems = %+v", ps)
	}
	wantProblem(t, err, "bad.wl", 1, "MODE", `"rx" is not ro or rw`)
	wantProblem(t, err, "config.yaml", 5, "silos[0].max_clients", "at least 1")
}

func TestWhitelistFileMounts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		whitelist string
		line      int
		key, msg  string
	}{
		{"missing source", "{{dir}}/nope /x ro\n", 1, "SOURCE", "does not exist"},
		{"reserved target", "# comment\n\n{{dir}}/src /proc ro\n", 3, "DEST", "reserved path /proc"},
		{"escaping target", "{{dir}}/src /../../x rw\n", 1, "DEST", "escapes the silo root"},
		{"duplicate target", "{{dir}}/src /x ro\n{{dir}}/file /x rw\n", 2, "DEST", `target "/x" is already mounted by a whitelist line`},
		{"duplicate with yaml mount", "{{dir}}/src /m ro\n", 1, "DEST", "already mounted by silos[0].mounts[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.write(t, "silo.wl", tc.whitelist)
			_, err := f.load(t, `silos:
  - name: app
    databases: [app]
    mounts:
      - {source: {{dir}}/src, target: /m}
    whitelist_file: silo.wl
`)
			wantProblem(t, err, "silo.wl", tc.line, tc.key, tc.msg)
		})
	}
	t.Run("origins name the whitelist line", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		wl := f.write(t, "silo.wl", "# header\n{{dir}}/src /a ro\n\n{{dir}}/file /b/c rw # trailing comment\n")
		cfg := f.mustLoad(t, `silos:
  - name: app
    databases: [app]
    whitelist_file: silo.wl
`)
		got := cfg.Silo("app").Mounts
		want := []Mount{
			{Source: filepath.Join(f.dir, "src"), Target: "/a", Mode: MountRO, Origin: wl + ":2"},
			{Source: filepath.Join(f.dir, "file"), Target: "/b/c", Mode: MountRW, Origin: wl + ":4"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("mounts = %+v, want %+v", got, want)
		}
	})
}

func TestCustomFSLayout(t *testing.T) {
	t.Parallel()
	t.Run("lines become silos", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		f.write(t, "sales.wl", "{{dir}}/src /import ro\n")
		f.write(t, "default.wl", "# nothing extra\n")
		layout := f.write(t, "pgsilo.layout", "# pgSilo layout\nsales {{dir}}/sales.wl\n\nDEFAULT {{dir}}/default.wl\n")
		cfg := f.mustLoad(t, `
custom_fs_layout: pgsilo.layout
defaults:
  limits: {pids: 64}
silos:
  - name: app
    databases: [app]
`)
		if len(cfg.Silos) != 3 {
			t.Fatalf("silos = %+v", cfg.Silos)
		}
		sales, def := cfg.Silo("sales"), cfg.Silo(DefaultSiloName)
		if sales == nil || def == nil {
			t.Fatalf("silos = %+v", cfg.Silos)
		}
		if !reflect.DeepEqual(sales.Databases, []string{"sales"}) || sales.Origin != layout+":2" || sales.Limits.Pids != 64 {
			t.Errorf("sales = %+v", sales)
		}
		if len(sales.Mounts) != 1 || sales.Mounts[0].Target != "/import" || sales.Mounts[0].Mode != MountRO {
			t.Errorf("sales mounts = %+v", sales.Mounts)
		}
		if !def.IsCatchAll() || cfg.Route("anything") != def || cfg.Route("sales") != sales || cfg.Route("app") != cfg.Silo("app") {
			t.Errorf("routing wrong: default = %+v", def)
		}
	})
	conflicts := []struct {
		name, layout string
		line         int
		key, msg     string
	}{
		{"same silo name as a yaml silo", "app {{dir}}/wl\n", 1, "DBNAME", `silo "app" is already declared at`},
		{"same database as a yaml silo", "# x\nreports {{dir}}/wl\n", 2, "DBNAME", `database "reports" is already served by silo "app" at`},
		{"second catch-all", "default {{dir}}/wl\n", 1, "DBNAME", "second catch-all"},
		{"database that is not a silo name", "Sales {{dir}}/wl\n", 1, "DBNAME", `database "Sales" cannot name a silo`},
		{"missing whitelist", "sales {{dir}}/nope.wl\n", 1, "WHITELIST", "cannot read whitelist"},
		{"malformed line", "sales\n", 1, "WHITELIST", "missing"},
	}
	for _, tc := range conflicts {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.write(t, "pgsilo.layout", tc.layout)
			_, err := f.load(t, `custom_fs_layout: pgsilo.layout
silos:
  - name: app
    databases: [app, reports, "*"]
`)
			wantProblem(t, err, "pgsilo.layout", tc.line, tc.key, tc.msg)
			if !strings.Contains(tc.msg, "cannot") && tc.key == "DBNAME" && !strings.Contains(err.Error(), "config.yaml:") {
				t.Errorf("a conflict must name both places:\n%v", err)
			}
		})
	}
}

func TestAliasesAndBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := f.mustLoad(t, `
defaults:
  mounts: &common
    - {source: {{dir}}/src, target: /common}
silos:
  - name: a
    databases: [a]
    mounts: *common
  - name: b
    databases: [b]
    limits: &lim {memory: 1GiB}
  - name: c
    databases: [c]
    limits: *lim
`)
	if cfg.Silo("c").Limits.MemoryBytes != 1<<30 {
		t.Errorf("alias not followed: %+v", cfg.Silo("c").Limits)
	}
	if len(cfg.Silo("a").Mounts) != 1 {
		t.Errorf("same-target mounts from an alias should replace, got %+v", cfg.Silo("a").Mounts)
	}

	// An anchor containing an alias to itself must end with a problem, not
	// loop or exhaust the stack.
	_, err := f.load(t, "silos: &s\n  - name: a\n    databases: *s\n")
	if err == nil {
		t.Fatal("self-referencing anchor accepted")
	}
	// Every alias expansion counts against a budget, so a small file cannot
	// make a reload do unbounded work.
	refs := strings.Repeat("*d, ", maxAliases)
	_, err = f.load(t, "silos:\n  - name: a\n    databases: [&d app, "+refs+"*d]\n")
	if err == nil || !strings.Contains(err.Error(), "alias expansions") {
		t.Fatalf("alias budget not enforced: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, err := Load(filepath.Join(f.dir, "absent.yaml"))
	var ve *ValidationError
	if err == nil || errors.As(err, &ve) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want a wrapped os.ErrNotExist", err)
	}
	cases := []struct {
		name, content string
		line          int
		msg           string
	}{
		{"empty file", "", 0, "no silos configured"},
		{"top level not a mapping", "- a\n- b\n", 1, "must be a mapping"},
		{"two documents", oneSilo + "---\nstate_dir: /x\n", 5, "a second YAML document"},
		{"silo is not a mapping", "silos:\n  - app\n", 2, "must be a mapping"},
		{"empty silo", "silos:\n  -\n  - name: b\n    databases: [b]\n", 2, "empty silo"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.content), filepath.Join(f.dir, "x.yaml"))
			ps := problemsOf(t, err)
			for _, p := range ps {
				if p.Line == tc.line && strings.Contains(p.Message, tc.msg) {
					return
				}
			}
			t.Errorf("want a problem at line %d containing %q, got:\n%v", tc.line, tc.msg, err)
		})
	}
}
