package config

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// layer is one level of settings as written (defaults: or one silo): a nil
// pointer means the key was absent and the level below applies.
type layer struct {
	layout       *Layout
	network      *Network
	seccomp      *SeccompMode
	maxClients   *int
	startTimeout *time.Duration
	idleTimeout  *time.Duration
	memory       *int64
	cpu          *float64
	pids         *int64
	passwordFile *string
	mounts       []mountDecl
	pgSettings   []pgSetting
}

// mountDecl is a mount with the place it was declared, for problems found
// after inheritance (duplicate targets).
type mountDecl struct {
	Mount
	file   string
	line   int
	dstKey string
}

func (m mountDecl) describe() string {
	if m.dstKey == "DEST" {
		return "a whitelist line"
	}
	return strings.TrimSuffix(m.dstKey, ".target")
}

type pgSetting struct {
	name, value string
}

// settings decodes the per-silo knobs shared by defaults: and silos[].
func (d *decoder) settings(fs map[string]field, l *layer) {
	if f, ok := fs["layout"]; ok {
		if s, set := d.str(f); set {
			switch v := Layout(s); v {
			case LayoutMinimal, LayoutStandard, LayoutEmpty:
				l.layout = &v
			default:
				d.bad(f.valLine(), f.path, "%q is not one of minimal, standard, empty", s)
			}
		}
	}
	if f, ok := fs["network"]; ok {
		if s, set := d.str(f); set {
			switch v := Network(s); v {
			case NetworkNone, NetworkHost:
				l.network = &v
			default:
				d.bad(f.valLine(), f.path, "%q is not one of none, host", s)
			}
		}
	}
	if f, ok := fs["seccomp"]; ok {
		if s, set := d.str(f); set {
			switch v := SeccompMode(s); v {
			case SeccompDefault, SeccompLog, SeccompOff:
				l.seccomp = &v
			default:
				d.bad(f.valLine(), f.path, "%q is not one of default, log, off", s)
			}
		}
	}
	if f, ok := fs["max_clients"]; ok {
		if v, set := d.integer(f); set {
			if v < 1 || v > 1<<31-1 {
				d.bad(f.valLine(), f.path, "%d is out of range; a silo must accept at least 1 client", v)
			} else {
				n := int(v)
				l.maxClients = &n
			}
		}
	}
	if f, ok := fs["start_timeout"]; ok {
		if dur, ok := d.duration(f); ok {
			if dur == 0 {
				d.bad(f.valLine(), f.path, "must be greater than 0: clients wait this long for a silo to start")
			} else {
				l.startTimeout = &dur
			}
		}
	}
	if f, ok := fs["idle_timeout"]; ok {
		if dur, ok := d.duration(f); ok {
			l.idleTimeout = &dur
		}
	}
	if f, ok := fs["limits"]; ok {
		d.limits(d.fields(f.val, f.line(), f.path, limitKeys), l)
	}
	if f, ok := fs["superuser_password_file"]; ok {
		if p, set := d.path(f); set {
			if p != "" {
				if msg := regularFileProblem(p); msg != "" {
					d.bad(f.valLine(), f.path, "%s", msg)
				}
			}
			l.passwordFile = &p
		}
	}
	if f, ok := fs["mounts"]; ok {
		items, _ := d.list(f)
		for i, n := range items {
			d.yamlMount(n, indexKey(f.path, i), nodeLine(n, f.valLine()), l)
		}
	}
	if f, ok := fs["postgres_settings"]; ok {
		d.postgresSettings(f, l)
	}
}

func (d *decoder) duration(f field) (time.Duration, bool) {
	s, set := d.str(f)
	if !set {
		return 0, false
	}
	v, err := ParseDuration(s)
	if err != nil {
		d.bad(f.valLine(), f.path, "%v", err)
		return 0, false
	}
	return v, true
}

func (d *decoder) limits(fs map[string]field, l *layer) {
	if f, ok := fs["memory"]; ok {
		if s, set := d.str(f); set {
			if v, err := ParseSize(s); err != nil {
				d.bad(f.valLine(), f.path, "%v", err)
			} else {
				l.memory = &v
			}
		}
	}
	if f, ok := fs["cpu"]; ok {
		if s, set := d.str(f); set {
			if v, err := ParseCPU(s); err != nil {
				d.bad(f.valLine(), f.path, "%v", err)
			} else {
				l.cpu = &v
			}
		}
	}
	if f, ok := fs["pids"]; ok {
		if v, set := d.integer(f); set {
			if v < 0 {
				d.bad(f.valLine(), f.path, "%d is negative; 0 means unlimited", v)
			} else {
				l.pids = &v
			}
		}
	}
}

// yamlMount decodes one {source, target, mode} entry of mounts:.
func (d *decoder) yamlMount(n *yaml.Node, key string, line int, l *layer) {
	fs := d.fields(n, line, key, mountKeys)
	if isNull(n) {
		d.bad(line, key, "empty mount; a mount is {source: /abs, target: /abs, mode: ro|rw}")
		return
	}
	if n.Kind != yaml.MappingNode {
		return // reported by fields
	}
	m := Mount{Mode: MountRO, Origin: d.file + ":" + strconv.Itoa(line)}
	ok := true
	for _, k := range []struct {
		key string
		dst *string
	}{{"source", &m.Source}, {"target", &m.Target}} {
		f, present := fs[k.key]
		if !present {
			d.bad(line, joinKey(key, k.key), "required")
			ok = false
			continue
		}
		s, set := d.str(f)
		if !set {
			d.bad(f.valLine(), f.path, "required")
			ok = false
			continue
		}
		*k.dst = s
	}
	if f, present := fs["mode"]; present {
		if s, set := d.str(f); set {
			switch v := MountMode(s); v {
			case MountRO, MountRW:
				m.Mode = v
			default:
				d.bad(f.valLine(), f.path, "%q is not ro or rw", s)
			}
		}
	}
	if !ok {
		return
	}
	srcLine, dstLine := line, line
	if f, ok := fs["source"]; ok {
		srcLine = f.valLine()
	}
	if f, ok := fs["target"]; ok {
		dstLine = f.valLine()
	}
	// Problems point at the value's own line so block-style mounts name
	// the offending line, not the start of the entry.
	if md, ok := d.checkMountAt(m, d.file, srcLine, dstLine, joinKey(key, "source"), joinKey(key, "target")); ok {
		l.mounts = append(l.mounts, md)
	}
}

// checkMount validates a mount read from a whitelist line.
func (d *decoder) checkMount(m Mount, file string, line int, srcKey, dstKey string) (mountDecl, bool) {
	return d.checkMountAt(m, file, line, line, srcKey, dstKey)
}

// checkMountAt checks a mount's source on the host and its target inside
// the silo, returning it cleaned. A mount whose target is unusable is
// dropped (so it cannot cause follow-on duplicate reports); a bad source is
// reported but the mount kept for the duplicate check.
func (d *decoder) checkMountAt(m Mount, file string, srcLine, dstLine int, srcKey, dstKey string) (mountDecl, bool) {
	if msg := sourceProblem(m.Source); msg != "" {
		d.probs.add(file, srcLine, srcKey, "%s", msg)
	} else {
		m.Source = filepath.Clean(m.Source)
		if msg := stateDirProblem(m.Source, d.stateDir); msg != "" {
			d.probs.add(file, srcLine, srcKey, "%s", msg)
		}
	}
	target, msg := cleanTarget(m.Target)
	if msg != "" {
		d.probs.add(file, dstLine, dstKey, "%s", msg)
		return mountDecl{}, false
	}
	m.Target = target
	return mountDecl{Mount: m, file: file, line: dstLine, dstKey: dstKey}, true
}

// reservedTargets are the paths inside a silo that the silo's own mount
// plan provides. A whitelist mount there would hide or replace them. The
// data and socket entries must match fslayout.DataTarget and
// fslayout.SocketTarget; they are repeated here because fslayout imports
// config and not the reverse.
var reservedTargets = []struct {
	path, why string
}{
	{"/proc", "the silo's own proc filesystem is mounted there"},
	{"/dev", "the silo's device nodes and /dev/shm are set up there"},
	{"/run/postgresql", "it is the postmaster's socket directory, the proxy's only way in"},
	{"/var/lib/postgresql/data", "it is the silo's data directory"},
	{"/etc/passwd", "the silo's generated user database is written there"},
	{"/etc/group", "the silo's generated group database is written there"},
}

// IsReservedTarget reports whether p (an absolute path inside a silo) is
// one of the paths the silo's own mount plan provides, or below one, and
// therefore cannot be the target of a whitelist mount.
func IsReservedTarget(p string) bool {
	c := filepath.Clean(p)
	path, _ := reservedBy(c)
	return c == "/" || path != ""
}

// reservedBy returns the reserved path that the cleaned target c is, or is
// below, and why it is reserved; "" when c is free.
func reservedBy(c string) (path, why string) {
	for _, r := range reservedTargets {
		if c == r.path || strings.HasPrefix(c, r.path+"/") {
			return r.path, r.why
		}
	}
	return "", ""
}

// cleanTarget returns the cleaned form of a mount target, or why it is not
// acceptable. A target is an absolute path inside the silo; ".." may not
// climb above the silo's root, which is what filepath.Join(root, target)
// would do on the host side while the root is assembled.
func cleanTarget(t string) (string, string) {
	if t == "" {
		return "", "empty path"
	}
	if strings.IndexByte(t, 0) >= 0 {
		return "", fmt.Sprintf("%q contains a NUL byte", t)
	}
	if !filepath.IsAbs(t) {
		if c := filepath.Clean(t); c == ".." || strings.HasPrefix(c, "../") {
			return "", fmt.Sprintf("%q escapes the silo root", t)
		}
		return "", fmt.Sprintf("%q is a relative path; a target is an absolute path inside the silo", t)
	}
	depth := 0
	for _, elem := range strings.Split(t, "/") {
		switch elem {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", fmt.Sprintf("%q escapes the silo root", t)
			}
		default:
			depth++
		}
	}
	c := filepath.Clean(t)
	if c == "/" {
		return "", fmt.Sprintf("%q is the silo root itself; the root is assembled by silo-proxy and cannot be replaced by a mount", t)
	}
	if path, why := reservedBy(c); path != "" {
		return "", fmt.Sprintf("%q collides with reserved path %s: %s", t, path, why)
	}
	return c, ""
}

// sourceProblem explains why a host path cannot be bind-mounted, or
// returns "". The source is checked at validation so that a typo fails
// `check` and a reload instead of a silo start much later.
func sourceProblem(src string) string {
	if msg := absPathProblem(src); msg != "" {
		return msg
	}
	fi, err := os.Stat(src)
	switch {
	case os.IsNotExist(err):
		return fmt.Sprintf("%q does not exist", src)
	case err != nil:
		return err.Error()
	}
	mode := fi.Mode()
	if mode.IsDir() || mode.IsRegular() || mode&fs.ModeDevice != 0 {
		return ""
	}
	return fmt.Sprintf("%q is a %s; only directories, regular files and devices can be bind-mounted", src, fileKind(mode))
}

// stateDirProblem explains why mounting src would expose state_dir, or
// returns "". state_dir holds every silo's data directory, socket directory
// and generated password; a silo that sees it could reach its neighbours'
// postmaster sockets, which is exactly what silos exist to prevent. Both
// paths are compared as cleaned text; symlinks are not followed.
func stateDirProblem(src, stateDir string) string {
	if stateDir == "" {
		return ""
	}
	switch {
	case src == stateDir || strings.HasPrefix(src, stateDir+"/"):
		return fmt.Sprintf("%q is inside state_dir %s, which holds every silo's data and socket directories", src, stateDir)
	case src == "/" || strings.HasPrefix(stateDir, src+"/"):
		return fmt.Sprintf("%q contains state_dir %s, which holds every silo's data and socket directories; mount a narrower directory", src, stateDir)
	}
	return ""
}

// regularFileProblem explains why p is not an existing regular file, or
// returns "".
func regularFileProblem(p string) string {
	fi, err := os.Stat(p)
	switch {
	case os.IsNotExist(err):
		return fmt.Sprintf("%q does not exist", p)
	case err != nil:
		return err.Error()
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("%q is a %s, not a regular file", p, fileKind(fi.Mode()))
	}
	return ""
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "special file"
}

// gucNameRE mirrors PostgreSQL's rule for (custom) configuration parameter
// names: dot-separated parts, each starting with a letter or underscore and
// continuing with letters, digits, underscores or dollars.
var gucNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*$`)

// proxyOwnedSettings are the postmaster settings silo-proxy sets itself.
// Overriding any of them would cut the proxy off from the silo or point the
// postmaster outside its sandbox.
var proxyOwnedSettings = map[string]string{
	"listen_addresses":        "silo-proxy sets it to '' so the postmaster listens only on its socket; a TCP listener would bypass the proxy",
	"unix_socket_directories": "the proxy reaches the silo only through its socket in /run/postgresql",
	"port":                    "the proxy connects to the socket named .s.PGSQL.5432",
	"data_directory":          "the silo's data directory is fixed at /var/lib/postgresql/data",
	"hba_file":                "silo-proxy generates pg_hba.conf inside the silo's data directory",
	"ident_file":              "it must stay inside the silo's data directory",
	"config_file":             "it must stay inside the silo's data directory",
}

// postgresSettings decodes postgres_settings:, extra `-c name=value`
// arguments of the postmaster. Names are folded to lower case because
// PostgreSQL treats them case-insensitively; two spellings of one name are
// a duplicate.
func (d *decoder) postgresSettings(f field, l *layer) {
	if isNull(f.val) {
		return
	}
	if f.val.Kind != yaml.MappingNode {
		d.bad(f.valLine(), f.path, "must be a mapping of setting names to values, not %s", describe(f.val))
		return
	}
	first := map[string]int{}
	for i := 0; i+1 < len(f.val.Content); i += 2 {
		k := d.resolve(f.val.Content[i], f.path)
		v := d.resolve(f.val.Content[i+1], f.path)
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.bad(nodeLine(k, f.line()), f.path, "setting names must be plain names, not %s", kindName(k))
			continue
		}
		key := joinKey(f.path, k.Value)
		name := strings.ToLower(k.Value)
		switch {
		case !gucNameRE.MatchString(k.Value):
			d.bad(k.Line, key, "%q is not a configuration parameter name (letters, digits, _ and . only)", k.Value)
			continue
		case proxyOwnedSettings[name] != "":
			d.bad(k.Line, key, "%s is owned by silo-proxy: %s", name, proxyOwnedSettings[name])
			continue
		}
		if prev, dup := first[name]; dup {
			d.bad(k.Line, key, "duplicate setting; %s is already set at line %d (names are case-insensitive)", name, prev)
			continue
		}
		first[name] = k.Line
		if isNull(v) || v.Kind != yaml.ScalarNode {
			d.bad(nodeLine(v, k.Line), key, "must be a value, not %s (quote an empty value as '')", describe(v))
			continue
		}
		if strings.IndexByte(v.Value, 0) >= 0 {
			d.bad(v.Line, key, "value contains a NUL byte")
			continue
		}
		l.pgSettings = append(l.pgSettings, pgSetting{name: name, value: v.Value})
	}
}

// addressProblem explains why a listen or admin address is not host:port
// with a numeric port, or returns "". The host may be empty (all
// interfaces), a name or an IP literal; it is resolved when listening.
func addressProblem(a string) string {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		if ae, ok := err.(*net.AddrError); ok {
			return fmt.Sprintf("%q is not host:port: %s", a, ae.Err)
		}
		return fmt.Sprintf("%q is not host:port: %v", a, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || port == "" {
		return fmt.Sprintf("%q is not host:port: port %q is not a number from 0 to 65535", a, port)
	}
	return ""
}

// siloNameRE limits silo names to what is safe as a single path component
// under state_dir and base_root_dir and as a cgroup directory name: no
// slashes, dots, spaces or upper case, at most 63 bytes.
var siloNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

const siloNameRule = "a silo name must match ^[a-z0-9][a-z0-9_-]{0,62}$ because it becomes a directory name under state_dir and base_root_dir and a cgroup name"

// checkSilos runs the checks that look across silos: valid and unique
// names, each database served by one silo only, at most one catch-all.
//
// A catch-all silo may also list ordinary databases ([app, "*"]): it then
// serves app explicitly (and creates it at bootstrap) as well as every
// database no other silo lists.
func (d *decoder) checkSilos(decls []*siloDecl) {
	type place struct {
		silo *siloDecl
		file string
		line int
	}
	names := map[string]*siloDecl{}
	dbs := map[string]place{}
	for _, s := range decls {
		name := s.silo.Name
		switch {
		case s.nameKey == "":
			// missing name: already reported
		case !siloNameRE.MatchString(name) && s.fromLayout:
			d.probs.add(s.file, s.nameLine, s.nameKey, "database %q cannot name a silo: %s; convert the file with `silo-proxy import-pgsilo` and choose a name", name, siloNameRule)
		case !siloNameRE.MatchString(name):
			d.probs.add(s.file, s.nameLine, s.nameKey, "%q is not a valid silo name: %s", name, siloNameRule)
		default:
			if prev, dup := names[name]; dup {
				d.probs.add(s.file, s.nameLine, s.nameKey, "silo %q is already declared at %s (%s)", name, prev.where(), prev.key)
			} else {
				names[name] = s
			}
		}
		for i, db := range s.silo.Databases {
			here := place{s, s.file, s.dbLines[i]}
			prev, dup := dbs[db]
			if !dup {
				dbs[db] = here
				continue
			}
			switch {
			case prev.silo == s:
				d.probs.add(s.file, here.line, s.dbKeys[i], "database %q is listed twice in this silo (first at line %d)", db, prev.line)
			case db == CatchAll:
				d.probs.add(s.file, here.line, s.dbKeys[i], "second catch-all (\"*\"): silo %q at %s:%d already serves every database no silo lists", prev.silo.silo.Name, prev.file, prev.line)
			default:
				d.probs.add(s.file, here.line, s.dbKeys[i], "database %q is already served by silo %q at %s:%d", db, prev.silo.silo.Name, prev.file, prev.line)
			}
		}
	}
}
