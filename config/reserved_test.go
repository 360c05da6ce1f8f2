package config_test

import (
	"testing"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
)

// TestReservedTargetsMatchFslayout guards the list config keeps in step
// with fslayout by hand (fslayout imports config, so config cannot use its
// constants): the paths fslayout mounts itself must be refused as whitelist
// targets, and ordinary paths beside them must not.
func TestReservedTargetsMatchFslayout(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path     string
		reserved bool
	}{
		{fslayout.DataTarget, true},
		{fslayout.DataTarget + "/base", true},
		{fslayout.SocketTarget, true},
		{fslayout.SocketTarget + "/.s.PGSQL.5432", true},
		{"/", true},
		{"/proc", true},
		{"/proc/1/root", true},
		{"/dev", true},
		{"/dev/shm", true},
		{"/etc/passwd", true},
		{"/etc/group", true},
		{"/procs", false},
		{"/var/lib/postgresql", false},
		{"/run", false},
		{"/etc", false},
		{"/etc/passwd-", false},
		{"/usr", false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			if got := config.IsReservedTarget(tc.path); got != tc.reserved {
				t.Errorf("IsReservedTarget(%q) = %v, want %v", tc.path, got, tc.reserved)
			}
		})
	}
}
