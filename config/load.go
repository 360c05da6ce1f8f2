package config

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Built-in values of keys a config file leaves out (DESIGN.md §2).
const (
	DefaultListenAddress = "127.0.0.1:6432"
	DefaultAdminAddress  = "127.0.0.1:9432"
	DefaultStateDir      = "/var/lib/silo-proxy"
	DefaultBaseRootDir   = "/run/silo-proxy/roots"
	DefaultMaxClients    = 100
	DefaultStartTimeout  = 30 * time.Second
)

// BuiltinSettings returns the settings a silo gets when neither defaults:
// nor the silo says otherwise: the minimal layout, no network, seccomp on,
// no limits.
func BuiltinSettings() Settings {
	return Settings{
		Layout:           LayoutMinimal,
		Mounts:           []Mount{},
		Network:          NetworkNone,
		MaxClients:       DefaultMaxClients,
		StartTimeout:     DefaultStartTimeout,
		IdleTimeout:      0,
		Seccomp:          SeccompDefault,
		PostgresSettings: map[string]string{},
	}
}

// Keys accepted at each level of the file. Anything else is rejected, so a
// misspelt key never silently falls back to a default.
var (
	topKeys      = []string{"listen", "admin", "tls", "postgres", "state_dir", "base_root_dir", "custom_fs_layout", "defaults", "silos"}
	listenKeys   = []string{"address", "unix_socket_dir"}
	adminKeys    = []string{"address"}
	tlsKeys      = []string{"mode", "cert_file", "key_file"}
	postgresKeys = []string{"bindir"}
	settingKeys  = []string{"layout", "mounts", "network", "max_clients", "start_timeout", "idle_timeout", "limits", "seccomp", "postgres_settings", "superuser_password_file"}
	siloKeys     = append([]string{"name", "databases", "whitelist_file"}, settingKeys...)
	limitKeys    = []string{"memory", "cpu", "pids"}
	mountKeys    = []string{"source", "target", "mode"}
)

// Load reads, decodes, resolves and validates the config file at path. When
// the file is invalid the error is a *ValidationError listing every
// problem with its file, line and key.
//
// Beyond the schema: a mount without mode is read-only; a silo may list
// "*" together with ordinary databases (it then creates those at bootstrap
// and also catches every unlisted database), but only one silo may hold
// "*"; postgres_settings names are folded to lower case, as PostgreSQL
// does; and no mount source may overlap state_dir.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse is Load on data already read from path: path names the file in
// problems and its directory anchors relative paths. Files the config
// refers to (whitelists, custom_fs_layout, mount sources, TLS files) are
// still read or checked on disk. An empty path stands for a file in the
// working directory and is named "<config>" in problems.
func Parse(data []byte, path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	name := path
	if name == "" {
		name = "<config>"
	}
	d := &decoder{
		file:       name,
		dir:        filepath.Dir(abs),
		probs:      &problems{primary: name},
		whitelists: map[string]*whitelistResult{},
	}
	cfg := d.config(data, abs)
	if err := d.probs.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// siloDecl is a silo as declared, before inheritance, with the places
// checks need to point at.
type siloDecl struct {
	silo     Silo
	layer    *layer
	file     string // where it was declared
	line     int
	key      string // "silos[2]" or "DBNAME" for custom_fs_layout lines
	nameLine int
	nameKey  string
	dbLines  []int
	dbKeys   []string
	// fromLayout marks silos made from custom_fs_layout lines, whose names
	// are database names and get a different explanation when invalid.
	fromLayout bool
}

func (s *siloDecl) where() string {
	return s.file + ":" + strconv.Itoa(s.line)
}

func (d *decoder) config(data []byte, abs string) *Config {
	cfg := &Config{
		Path:        abs,
		Listen:      Listen{Address: DefaultListenAddress},
		Admin:       Admin{Address: DefaultAdminAddress},
		TLS:         TLS{Mode: TLSDisable},
		Postgres:    Postgres{BinDir: BinDirAuto},
		StateDir:    DefaultStateDir,
		BaseRootDir: DefaultBaseRootDir,
	}
	root := d.parseDocument(data)
	if root == nil {
		return nil
	}
	top := d.fields(root, 1, "", topKeys)

	if f, ok := top["listen"]; ok {
		lf := d.fields(f.val, f.line(), f.path, listenKeys)
		d.address(lf, &cfg.Listen.Address)
		if v, ok := lf["unix_socket_dir"]; ok {
			cfg.Listen.UnixSocketDir, _ = d.path(v)
		}
	}
	if f, ok := top["admin"]; ok {
		d.address(d.fields(f.val, f.line(), f.path, adminKeys), &cfg.Admin.Address)
	}
	if f, ok := top["tls"]; ok {
		d.tls(d.fields(f.val, f.line(), f.path, tlsKeys), &cfg.TLS)
	}
	if f, ok := top["postgres"]; ok {
		pf := d.fields(f.val, f.line(), f.path, postgresKeys)
		if v, ok := pf["bindir"]; ok {
			d.bindir(v, &cfg.Postgres.BinDir)
		}
	}
	for _, k := range []struct {
		key string
		dst *string
	}{{"state_dir", &cfg.StateDir}, {"base_root_dir", &cfg.BaseRootDir}, {"custom_fs_layout", &cfg.CustomFSLayout}} {
		if f, ok := top[k.key]; ok {
			if p, _ := d.path(f); p != "" {
				*k.dst = p
			}
		}
	}

	d.stateDir = cfg.StateDir
	defaults := &layer{}
	if f, ok := top["defaults"]; ok {
		df := d.fields(f.val, f.line(), f.path, settingKeys)
		d.settings(df, defaults)
	}
	cfg.Defaults = d.merge(BuiltinSettings(), defaults)

	var decls []*siloDecl
	silosLine := 0
	if f, ok := top["silos"]; ok {
		silosLine = f.line()
		items, _ := d.list(f)
		for i, n := range items {
			if s := d.silo(n, indexKey("silos", i), nodeLine(n, f.line())); s != nil {
				decls = append(decls, s)
			}
		}
	}
	if cfg.CustomFSLayout != "" {
		decls = append(decls, d.layoutSilos(cfg.CustomFSLayout, top["custom_fs_layout"])...)
	}
	if len(decls) == 0 {
		d.bad(silosLine, "silos", "no silos configured: there is nothing to route connections to (add silos: or custom_fs_layout:)")
	}
	d.checkSilos(decls)

	cfg.Silos = make([]Silo, 0, len(decls))
	for _, s := range decls {
		silo := s.silo
		silo.Settings = d.merge(cfg.Defaults, s.layer)
		cfg.Silos = append(cfg.Silos, silo)
	}
	return cfg
}

// address reads the "address" key of a listen: or admin: mapping.
func (d *decoder) address(fs map[string]field, dst *string) {
	f, ok := fs["address"]
	if !ok {
		return
	}
	s, set := d.str(f)
	if !set {
		return
	}
	if msg := addressProblem(s); msg != "" {
		d.bad(f.valLine(), f.path, "%s", msg)
		return
	}
	*dst = s
}

func (d *decoder) tls(fs map[string]field, t *TLS) {
	modeLine := 0
	if f, ok := fs["mode"]; ok {
		modeLine = f.valLine()
		if s, set := d.str(f); set {
			switch m := TLSMode(s); m {
			case TLSDisable, TLSAllow, TLSRequire:
				t.Mode = m
			default:
				d.bad(f.valLine(), f.path, "%q is not one of disable, allow, require", s)
			}
		}
	}
	if t.Mode == TLSDisable {
		// Unused files are resolved for display but not required to exist,
		// so TLS can be switched off without deleting the paths.
		for _, k := range []struct {
			key string
			dst *string
		}{{"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
			if f, ok := fs[k.key]; ok {
				*k.dst, _ = d.path(f)
			}
		}
		return
	}
	for _, k := range []struct {
		key string
		dst *string
	}{{"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}} {
		f, ok := fs[k.key]
		var p string
		if ok {
			p, _ = d.path(f)
		}
		if p == "" {
			line := modeLine
			if ok {
				line = f.valLine()
			}
			d.bad(line, "tls."+k.key, "required when tls.mode is %s", t.Mode)
			continue
		}
		if msg := regularFileProblem(p); msg != "" {
			d.bad(f.valLine(), f.path, "%s", msg)
		}
		*k.dst = p
	}
}

func (d *decoder) bindir(f field, dst *string) {
	s, set := d.str(f)
	if !set || s == "" || s == BinDirAuto {
		return
	}
	if !filepath.IsAbs(s) {
		d.bad(f.valLine(), f.path, "%q must be %q or an absolute directory", s, BinDirAuto)
		return
	}
	s = filepath.Clean(s)
	fi, err := os.Stat(s)
	switch {
	case os.IsNotExist(err):
		d.bad(f.valLine(), f.path, "%q does not exist", s)
		return
	case err != nil:
		d.bad(f.valLine(), f.path, "%v", err)
		return
	case !fi.IsDir():
		d.bad(f.valLine(), f.path, "%q is not a directory", s)
		return
	}
	*dst = s
}

// silo decodes one element of silos:.
func (d *decoder) silo(n *yaml.Node, key string, line int) *siloDecl {
	fs := d.fields(n, line, key, siloKeys)
	if isNull(n) || n.Kind != yaml.MappingNode {
		if isNull(n) {
			d.bad(line, key, "empty silo; a silo needs at least name and databases")
		}
		return nil
	}
	s := &siloDecl{file: d.file, line: line, key: key, layer: &layer{}}
	s.silo.Origin = s.where()

	if f, ok := fs["name"]; ok {
		s.nameLine, s.nameKey = f.valLine(), f.path
		s.silo.Name, _ = d.str(f)
	} else {
		d.bad(line, joinKey(key, "name"), "required")
	}

	if f, ok := fs["databases"]; ok {
		items, ok := d.list(f)
		if ok && len(items) == 0 {
			d.bad(f.valLine(), f.path, `empty; list the databases this silo serves, or "*" for the catch-all`)
		}
		for i, item := range items {
			ikey := indexKey(f.path, i)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				d.bad(nodeLine(item, f.valLine()), ikey, "must be a database name, not %s", describe(item))
				continue
			}
			if msg := databaseNameProblem(item.Value); msg != "" {
				d.bad(item.Line, ikey, "%s", msg)
				continue
			}
			s.silo.Databases = append(s.silo.Databases, item.Value)
			s.dbLines = append(s.dbLines, item.Line)
			s.dbKeys = append(s.dbKeys, ikey)
		}
	} else {
		d.bad(line, joinKey(key, "databases"), `required; list the databases this silo serves, or "*" for the catch-all`)
	}

	d.settings(fs, s.layer)

	if f, ok := fs["whitelist_file"]; ok {
		if p, _ := d.path(f); p != "" {
			s.silo.WhitelistFile = p
			wl := d.whitelist(p)
			if wl.readErr != nil {
				d.bad(f.valLine(), f.path, "cannot read whitelist: %v", wl.readErr)
			} else {
				d.probs.addAll(wl.probs)
				for _, l := range wl.lines {
					if m, ok := d.checkMount(l.Mount, p, l.Line, "SOURCE", "DEST"); ok {
						s.layer.mounts = append(s.layer.mounts, m)
					}
				}
			}
		}
	}
	return s
}

// whitelist reads and parses a whitelist file once per decode.
func (d *decoder) whitelist(path string) *whitelistResult {
	if r, ok := d.whitelists[path]; ok {
		return r
	}
	r := &whitelistResult{}
	data, err := readPgSiloFile(path)
	if err != nil {
		r.readErr = err
	} else {
		r.lines, r.probs = parseWhitelist(data, path)
	}
	d.whitelists[path] = r
	return r
}

// layoutSilos turns a custom_fs_layout file into silos: one per database
// line, named after the database, and a catch-all silo named "default" for
// the Default line. Their mounts come from the whitelist each line names.
func (d *decoder) layoutSilos(path string, ref field) []*siloDecl {
	data, err := readPgSiloFile(path)
	if err != nil {
		d.bad(ref.valLine(), ref.path, "cannot read custom_fs_layout: %v", err)
		return nil
	}
	entries, probs := parseLayout(data, path)
	d.probs.addAll(probs)
	var out []*siloDecl
	for _, e := range entries {
		s := &siloDecl{
			file: path, line: e.Line, key: "DBNAME",
			nameLine: e.Line, nameKey: "DBNAME",
			dbLines: []int{e.Line}, dbKeys: []string{"DBNAME"},
			layer: &layer{}, fromLayout: true,
		}
		s.silo.Origin = s.where()
		s.silo.WhitelistFile = e.Whitelist
		if e.Default {
			s.silo.Name = DefaultSiloName
			s.silo.Databases = []string{CatchAll}
		} else {
			s.silo.Name = e.Database
			s.silo.Databases = []string{e.Database}
		}
		wl := d.whitelist(e.Whitelist)
		if wl.readErr != nil {
			d.probs.add(path, e.Line, "WHITELIST", "cannot read whitelist: %v", wl.readErr)
		} else {
			d.probs.addAll(wl.probs)
			for _, l := range wl.lines {
				if m, ok := d.checkMount(l.Mount, e.Whitelist, l.Line, "SOURCE", "DEST"); ok {
					s.layer.mounts = append(s.layer.mounts, m)
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// merge applies a layer of overrides to base and returns the effective
// settings, as documented on Settings: scalars replace, limits merge field
// by field, postgres_settings key by key, and mounts are appended with a
// layer mount replacing a base mount of the same target. Two mounts of the
// same target within the layer itself are reported. The result shares no
// slice or map with base.
func (d *decoder) merge(base Settings, l *layer) Settings {
	out := base
	if l.layout != nil {
		out.Layout = *l.layout
	}
	if l.network != nil {
		out.Network = *l.network
	}
	if l.seccomp != nil {
		out.Seccomp = *l.seccomp
	}
	if l.maxClients != nil {
		out.MaxClients = *l.maxClients
	}
	if l.startTimeout != nil {
		out.StartTimeout = *l.startTimeout
	}
	if l.idleTimeout != nil {
		out.IdleTimeout = *l.idleTimeout
	}
	if l.memory != nil {
		out.Limits.MemoryBytes = *l.memory
	}
	if l.cpu != nil {
		out.Limits.CPU = *l.cpu
	}
	if l.pids != nil {
		out.Limits.Pids = *l.pids
	}
	if l.passwordFile != nil {
		out.SuperuserPasswordFile = *l.passwordFile
	}

	out.PostgresSettings = maps.Clone(base.PostgresSettings)
	if out.PostgresSettings == nil {
		out.PostgresSettings = map[string]string{}
	}
	for _, s := range l.pgSettings {
		out.PostgresSettings[s.name] = s.value
	}

	out.Mounts = append([]Mount{}, base.Mounts...)
	inBase := make(map[string]int, len(base.Mounts))
	for i, m := range base.Mounts {
		inBase[m.Target] = i
	}
	own := make(map[string]mountDecl, len(l.mounts))
	for _, m := range l.mounts {
		if prev, dup := own[m.Target]; dup {
			d.probs.add(m.file, m.line, m.dstKey, "target %q is already mounted by %s (%s)", m.Target, prev.describe(), prev.Origin)
			continue
		}
		own[m.Target] = m
		if i, ok := inBase[m.Target]; ok {
			out.Mounts[i] = m.Mount
		} else {
			out.Mounts = append(out.Mounts, m.Mount)
		}
	}
	return out
}
