// Package config owns silo-proxy's configuration: the YAML schema of
// DESIGN.md §2, its validation, inheritance of defaults into silos, and the
// pgSilo formats (custom_fs_layout and whitelist files) of §3.
//
// A *Config returned by Load is fully resolved: every Silo carries its
// effective Settings (defaults merged with its own overrides), paths are
// absolute and cleaned, and every rule of §2 has been checked. Other packages
// never look at raw YAML.
package config

import (
	"path/filepath"
	"time"
)

// Config is a loaded, validated and resolved configuration.
type Config struct {
	// Path is the absolute path of the file the config was loaded from.
	// Relative state_dir, base_root_dir and custom_fs_layout values are
	// resolved against its directory.
	Path string

	Listen         Listen
	Admin          Admin
	TLS            TLS
	Postgres       Postgres
	StateDir       string
	BaseRootDir    string
	CustomFSLayout string
	Defaults       Settings
	Silos          []Silo
}

// Listen is the client-facing listener configuration.
type Listen struct {
	// Address is the TCP host:port clients connect to.
	Address string
	// UnixSocketDir, when set, also creates .s.PGSQL.<port> there so that
	// `psql -h DIR -p PORT` works.
	UnixSocketDir string
}

// Admin is the HTTP listener for /metrics, /healthz, /readyz and /silos.
type Admin struct {
	Address string
}

// TLSMode selects client-side TLS termination.
type TLSMode string

const (
	TLSDisable TLSMode = "disable"
	TLSAllow   TLSMode = "allow"
	TLSRequire TLSMode = "require"
)

// TLS is the client-side TLS termination configuration.
type TLS struct {
	Mode     TLSMode
	CertFile string
	KeyFile  string
}

// Postgres locates the PostgreSQL server installation.
type Postgres struct {
	// BinDir is "auto" (pg_config --bindir, else the newest
	// /usr/lib/postgresql/*/bin) or an absolute directory.
	BinDir string
}

// BinDirAuto is the Postgres.BinDir value asking for discovery.
const BinDirAuto = "auto"

// Layout names one of the base filesystem layouts of DESIGN.md §4.
type Layout string

const (
	LayoutMinimal  Layout = "minimal"
	LayoutStandard Layout = "standard"
	LayoutEmpty    Layout = "empty"
)

// Network selects the silo's network namespace.
type Network string

const (
	// NetworkNone gives the silo a fresh network namespace holding only a
	// loopback interface.
	NetworkNone Network = "none"
	// NetworkHost shares the host's network namespace. It weakens isolation
	// and exists for extensions that must reach the network.
	NetworkHost Network = "host"
)

// SeccompMode selects the silo's seccomp filter.
type SeccompMode string

const (
	SeccompDefault SeccompMode = "default" // deny with EPERM
	SeccompLog     SeccompMode = "log"     // allow, but log
	SeccompOff     SeccompMode = "off"
)

// MountMode is ro or rw.
type MountMode string

const (
	MountRO MountMode = "ro"
	MountRW MountMode = "rw"
)

// Mount is one whitelisted bind mount: the host Source appears at Target
// inside the silo.
type Mount struct {
	Source string
	Target string
	Mode   MountMode
	// Origin says where the mount was declared, e.g. "config.yaml:14" or
	// "sales.whitelist:3", so that errors at silo start can name it.
	Origin string
}

// Limits are cgroup limits. Zero values mean unlimited.
type Limits struct {
	// MemoryBytes caps the silo's memory (memory.max / memory.limit_in_bytes).
	MemoryBytes int64
	// CPU is the number of CPUs the silo may use, e.g. 0.5 (cpu.max / CFS quota).
	CPU float64
	// Pids caps the number of tasks (pids.max).
	Pids int64
}

// Settings are the per-silo knobs. The defaults: section supplies them to
// every silo and each silo may override any of them. Scalars are replaced;
// limits are merged field by field; postgres_settings are merged key by key;
// mounts are appended, a silo mount replacing a default mount with the same
// target.
type Settings struct {
	Layout                Layout
	Mounts                []Mount
	Network               Network
	MaxClients            int
	StartTimeout          time.Duration
	IdleTimeout           time.Duration
	Limits                Limits
	Seccomp               SeccompMode
	PostgresSettings      map[string]string
	SuperuserPasswordFile string
}

// CatchAll is the databases entry that makes a silo the catch-all for every
// database no other silo lists.
const CatchAll = "*"

// Silo is one silo with its effective settings.
type Silo struct {
	Name      string
	Databases []string
	// WhitelistFile is a pgSilo-format whitelist whose mounts have already
	// been appended to Settings.Mounts.
	WhitelistFile string
	Settings
	// Origin is where the silo was declared ("config.yaml:31" or
	// "layout.txt:2" for silos from custom_fs_layout).
	Origin string
}

// IsCatchAll reports whether the silo serves databases no other silo lists.
func (s *Silo) IsCatchAll() bool {
	for _, d := range s.Databases {
		if d == CatchAll {
			return true
		}
	}
	return false
}

// Silo returns the silo with the given name, or nil.
func (c *Config) Silo(name string) *Silo {
	for i := range c.Silos {
		if c.Silos[i].Name == name {
			return &c.Silos[i]
		}
	}
	return nil
}

// Route returns the silo serving database db: the silo that lists it, else
// the catch-all silo, else nil.
func (c *Config) Route(db string) *Silo {
	var catchAll *Silo
	for i := range c.Silos {
		s := &c.Silos[i]
		for _, d := range s.Databases {
			if d == db {
				return s
			}
			if d == CatchAll {
				catchAll = s
			}
		}
	}
	return catchAll
}

// SiloPaths are the host paths the proxy keeps for one silo under
// <state_dir>/silos/<name>.
type SiloPaths struct {
	Dir          string // <state_dir>/silos/<name>
	Data         string // the data directory, owned by the silo's postgres uid
	Run          string // the socket directory, /run/postgresql inside the silo
	PasswordFile string // generated superuser password, mode 0600, never inside the silo
	IDMap        string // the persisted host uid/gid range of the silo
	Root         string // <base_root_dir>/<name>, where the root is assembled
}

// Paths returns the host paths of the named silo.
func (c *Config) Paths(name string) SiloPaths {
	dir := filepath.Join(c.StateDir, "silos", name)
	return SiloPaths{
		Dir:          dir,
		Data:         filepath.Join(dir, "data"),
		Run:          filepath.Join(dir, "run"),
		PasswordFile: filepath.Join(dir, "superuser.password"),
		IDMap:        filepath.Join(dir, "idmap"),
		Root:         filepath.Join(c.BaseRootDir, name),
	}
}
