package config

import "maps"

// SandboxChanged reports whether o differs from s in anything the running
// postmaster was started with, so that a reload must restart the silo for
// the change to take effect (DESIGN.md §8): its layout, mounts (source,
// target and mode, in order, since order decides which of two nested
// mounts wins), network, limits, seccomp mode, postgres_settings or
// superuser_password_file. Differences in databases, max_clients,
// start_timeout and idle_timeout only change routing and admission and are
// applied without a restart; so are Origin and WhitelistFile, which only
// record where the settings came from.
func (s *Silo) SandboxChanged(o *Silo) bool {
	if s.Layout != o.Layout ||
		s.Network != o.Network ||
		s.Seccomp != o.Seccomp ||
		s.Limits != o.Limits ||
		s.SuperuserPasswordFile != o.SuperuserPasswordFile {
		return true
	}
	if len(s.Mounts) != len(o.Mounts) {
		return true
	}
	for i := range s.Mounts {
		a, b := s.Mounts[i], o.Mounts[i]
		if a.Source != b.Source || a.Target != b.Target || a.Mode != b.Mode {
			return true
		}
	}
	return !maps.Equal(s.PostgresSettings, o.PostgresSettings)
}
