package config

import (
	"maps"
	"slices"
	"testing"
	"time"
)

func TestSandboxChanged(t *testing.T) {
	t.Parallel()
	base := func() Silo {
		return Silo{
			Name:      "app",
			Databases: []string{"app"},
			Origin:    "config.yaml:3",
			Settings: Settings{
				Layout:       LayoutMinimal,
				Network:      NetworkNone,
				MaxClients:   100,
				StartTimeout: 30 * time.Second,
				Seccomp:      SeccompDefault,
				Limits:       Limits{MemoryBytes: 1 << 30, CPU: 0.5, Pids: 100},
				Mounts: []Mount{
					{Source: "/srv/a", Target: "/a", Mode: MountRO, Origin: "config.yaml:9"},
					{Source: "/srv/b", Target: "/b", Mode: MountRW, Origin: "config.yaml:10"},
				},
				PostgresSettings: map[string]string{"work_mem": "4MB"},
			},
		}
	}
	cases := []struct {
		name   string
		edit   func(s *Silo)
		change bool
	}{
		{"identical", func(s *Silo) {}, false},
		{"databases", func(s *Silo) { s.Databases = append(s.Databases, "app2") }, false},
		{"max_clients", func(s *Silo) { s.MaxClients = 5 }, false},
		{"start_timeout", func(s *Silo) { s.StartTimeout = time.Second }, false},
		{"idle_timeout", func(s *Silo) { s.IdleTimeout = time.Minute }, false},
		{"origins moved", func(s *Silo) { s.Origin = "config.yaml:30"; s.Mounts[0].Origin = "other:1" }, false},
		{"whitelist file renamed, same mounts", func(s *Silo) { s.WhitelistFile = "/etc/x.wl" }, false},
		{"postgres_settings emptied", func(s *Silo) { s.PostgresSettings = nil }, true},
		{"layout", func(s *Silo) { s.Layout = LayoutStandard }, true},
		{"network", func(s *Silo) { s.Network = NetworkHost }, true},
		{"seccomp", func(s *Silo) { s.Seccomp = SeccompOff }, true},
		{"memory limit", func(s *Silo) { s.Limits.MemoryBytes = 1 << 29 }, true},
		{"cpu limit", func(s *Silo) { s.Limits.CPU = 1 }, true},
		{"pids limit", func(s *Silo) { s.Limits.Pids = 0 }, true},
		{"mount added", func(s *Silo) { s.Mounts = append(s.Mounts, Mount{Source: "/c", Target: "/c", Mode: MountRO}) }, true},
		{"mount removed", func(s *Silo) { s.Mounts = s.Mounts[:1] }, true},
		{"mount mode", func(s *Silo) { s.Mounts[0].Mode = MountRW }, true},
		{"mount source", func(s *Silo) { s.Mounts[1].Source = "/srv/c" }, true},
		{"mount target", func(s *Silo) { s.Mounts[1].Target = "/c" }, true},
		{"mounts reordered", func(s *Silo) { slices.Reverse(s.Mounts) }, true},
		{"postgres setting changed", func(s *Silo) { s.PostgresSettings["work_mem"] = "8MB" }, true},
		{"postgres setting added", func(s *Silo) { s.PostgresSettings["jit"] = "off" }, true},
		{"superuser_password_file", func(s *Silo) { s.SuperuserPasswordFile = "/etc/pw" }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			old, cur := base(), base()
			tc.edit(&cur)
			if got := old.SandboxChanged(&cur); got != tc.change {
				t.Errorf("old.SandboxChanged(new) = %v, want %v", got, tc.change)
			}
			if got := cur.SandboxChanged(&old); got != tc.change {
				t.Errorf("new.SandboxChanged(old) = %v, want %v (must be symmetric)", got, tc.change)
			}
		})
	}
}

func TestSandboxChangedNilAndEmptyAreEqual(t *testing.T) {
	t.Parallel()
	a := Silo{Settings: Settings{PostgresSettings: map[string]string{}, Mounts: []Mount{}}}
	b := Silo{}
	if a.SandboxChanged(&b) || b.SandboxChanged(&a) {
		t.Error("nil and empty postgres_settings/mounts must compare equal")
	}
}

// TestSandboxChangedAfterReload exercises SandboxChanged the way reload
// uses it: on two loads of a config file.
func TestSandboxChangedAfterReload(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	before := f.mustLoad(t, `silos:
  - name: a
    databases: [a]
  - name: b
    databases: [b]
`)
	after := f.mustLoad(t, `defaults:
  max_clients: 3
silos:
  - name: a
    databases: [a, a2]
    idle_timeout: 1m
  - name: b
    databases: [b]
    postgres_settings: {work_mem: 8MB}
`)
	if before.Silo("a").SandboxChanged(after.Silo("a")) {
		t.Error("routing-only change of silo a reported as needing a restart")
	}
	if !before.Silo("b").SandboxChanged(after.Silo("b")) {
		t.Error("postgres_settings change of silo b not reported")
	}
	if !maps.Equal(before.Silo("a").PostgresSettings, after.Silo("a").PostgresSettings) {
		t.Error("fixture assumption broken")
	}
}
