package spawner

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/silo-proxy/silo-proxy/config"
)

// This file holds the pure half of the cgroup support: parsing
// /proc/self/cgroup and /proc/self/mountinfo, naming, and turning
// config.Limits into the exact bytes written to controller files. The
// filesystem half lives in cgroup_linux.go.

// The controllers a silo's limits and usage need. cpuacct exists only on
// cgroup v1; on v2 the core cpu.stat file carries the same usage.
const (
	cgroupMemory  = "memory"
	cgroupCPU     = "cpu"
	cgroupPids    = "pids"
	cgroupCPUAcct = "cpuacct"
)

// cgroupCFSPeriod is the CFS bandwidth period silo-proxy writes, in
// microseconds: the kernel's default (100 ms), which both cpu.max and
// cpu.cfs_period_us accept.
const cgroupCFSPeriod = 100000

// cgroupMinQuota mirrors the kernel's min_cfs_quota_period (1 ms): a smaller
// quota is rejected with EINVAL, so tiny cpu limits are rounded up to it.
const cgroupMinQuota = 1000

// cgroupSupervisor is the leaf the proxy moves itself into on cgroup v2 so
// that its own cgroup holds no processes and may hand controllers down to
// the silos (the v2 "no internal processes" rule).
const cgroupSupervisor = "supervisor"

// errCgroupBusy reports a silo cgroup that still holds tasks after the silo
// stopped: something outlived its postmaster.
var errCgroupBusy = errors.New("cgroup still has tasks")

// cgroupError is a failed cgroup filesystem operation, naming the file.
type cgroupError struct {
	Op   string // "mkdir", "write", "read", "rmdir", "move"
	Path string
	Err  error
}

func (e *cgroupError) Error() string {
	return "cgroup " + e.Op + " " + e.Path + ": " + e.Err.Error()
}

func (e *cgroupError) Unwrap() error { return e.Err }

// cgroupInstanceDir names the directory that groups one proxy's silo
// cgroups below the proxy's own cgroup: silo-proxy-<hash of instance>. The
// instance is the proxy's state directory, so two proxies on one host (or
// parallel test runs) never share a directory, while a restarted proxy finds
// and reuses its own.
func cgroupInstanceDir(instance string) string {
	sum := sha256.Sum256([]byte(instance))
	return "silo-proxy-" + hex.EncodeToString(sum[:6])
}

// cgroupValidName rejects silo names that are not a single path element: the
// name becomes a directory in cgroupfs, and the config's own validation is
// not trusted to have kept "/" or ".." out of it.
func cgroupValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("silo name %q cannot name a cgroup directory", name)
	}
	if name == cgroupSupervisor {
		return fmt.Errorf("silo name %q is reserved in the cgroup tree", name)
	}
	return nil
}

// cgroupProcLine is one line of /proc/<pid>/cgroup: "ID:CONTROLLERS:PATH".
// Controllers is empty for the cgroup v2 line ("0::/path") and holds the
// comma-separated list of a v1 hierarchy, including named ones such as
// "name=systemd".
type cgroupProcLine struct {
	ID          int
	Controllers []string
	Path        string
}

// v2 reports whether the line describes the unified (v2) hierarchy.
func (l cgroupProcLine) v2() bool { return l.ID == 0 && len(l.Controllers) == 0 }

// cgroupParseProcFile parses /proc/<pid>/cgroup. The path may itself contain
// ':' (cgroup names may), so each line splits into at most three fields.
func cgroupParseProcFile(data []byte) ([]cgroupProcLine, error) {
	var out []cgroupProcLine
	for n, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("/proc/self/cgroup line %d: %q: want ID:CONTROLLERS:PATH", n+1, line)
		}
		id, err := strconv.Atoi(f[0])
		if err != nil || id < 0 {
			return nil, fmt.Errorf("/proc/self/cgroup line %d: bad hierarchy id %q", n+1, f[0])
		}
		if !strings.HasPrefix(f[2], "/") {
			return nil, fmt.Errorf("/proc/self/cgroup line %d: path %q is not absolute", n+1, f[2])
		}
		var ctrls []string
		if f[1] != "" {
			ctrls = strings.Split(f[1], ",")
			for _, c := range ctrls {
				if c == "" {
					return nil, fmt.Errorf("/proc/self/cgroup line %d: empty controller name in %q", n+1, f[1])
				}
			}
		}
		out = append(out, cgroupProcLine{ID: id, Controllers: ctrls, Path: f[2]})
	}
	return out, nil
}

// cgroupMount is a cgroup filesystem mount found in mountinfo.
type cgroupMount struct {
	// Root is the directory of the hierarchy mounted here (mountinfo field
	// 4): "/" normally, a sub-path for bind mounts and cgroup namespaces.
	Root       string
	Mountpoint string
	V2         bool
	// Options are the v1 superblock options, which name the hierarchy's
	// controllers ("rw,cpu,cpuacct", "rw,name=systemd").
	Options  []string
	ReadOnly bool
}

// hasOption reports whether a v1 mount carries the controller (or
// name=NAME) option opt.
func (m cgroupMount) hasOption(opt string) bool {
	for _, o := range m.Options {
		if o == opt {
			return true
		}
	}
	return false
}

// cgroupParseMountinfo returns the cgroup and cgroup2 mounts of a mountinfo file
// (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE
// SOURCE SUPEROPTS". Other filesystems are skipped; malformed lines are an
// error because guessing where a hierarchy lives could put silos in the
// wrong cgroup.
func cgroupParseMountinfo(data []byte) ([]cgroupMount, error) {
	var out []cgroupMount
	for n, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 7 || sep < 0 || len(f) < sep+4 {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n+1, line)
		}
		fstype := f[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		root, err := cgroupUnescape(f[3])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: root: %w", n+1, err)
		}
		mp, err := cgroupUnescape(f[4])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: mount point: %w", n+1, err)
		}
		if !strings.HasPrefix(root, "/") || !strings.HasPrefix(mp, "/") {
			return nil, fmt.Errorf("mountinfo line %d: root %q or mount point %q not absolute", n+1, root, mp)
		}
		m := cgroupMount{Root: filepath.Clean(root), Mountpoint: filepath.Clean(mp), V2: fstype == "cgroup2"}
		super := strings.Split(f[sep+3], ",")
		if !m.V2 {
			m.Options = super
		}
		for _, o := range append(strings.Split(f[5], ","), super...) {
			if o == "ro" {
				m.ReadOnly = true
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// cgroupUnescape undoes the kernel's octal escaping of space, tab,
// newline and backslash in mountinfo paths (\040 and friends).
func cgroupUnescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// cgroupDirFor maps a cgroup path (from /proc/self/cgroup) to its host
// directory through a mount of its hierarchy. It fails when the cgroup lies
// outside the mounted subtree, as happens in a cgroup namespace whose root
// is below the mount's root or with a path of the form "/../x".
func cgroupDirFor(m cgroupMount, path string) (string, bool) {
	if !strings.HasPrefix(path, "/") || path != filepath.Clean(path) {
		return "", false
	}
	rel := path
	if m.Root != "/" {
		if path != m.Root && !strings.HasPrefix(path, m.Root+"/") {
			return "", false
		}
		rel = "/" + strings.TrimPrefix(path, m.Root)
	}
	return filepath.Join(m.Mountpoint, rel), true
}

// cgroupLayout is where the proxy's own cgroup lives in each hierarchy.
type cgroupLayout struct {
	// V2Dir is the proxy's own cgroup directory in the unified hierarchy,
	// "" when cgroup2 is not mounted (or not reachable, or read-only).
	V2Dir string
	// V1Dirs maps each v1 controller to the proxy's own cgroup directory
	// in the hierarchy that carries it. Co-mounted controllers (cpu and
	// cpuacct) map to the same directory.
	V1Dirs map[string]string
}

// cgroupResolveLayout finds the proxy's own cgroup in every mounted, writable
// hierarchy from its /proc/self/cgroup lines and the cgroup mounts.
func cgroupResolveLayout(lines []cgroupProcLine, mounts []cgroupMount) cgroupLayout {
	l := cgroupLayout{V1Dirs: map[string]string{}}
	for _, line := range lines {
		if line.v2() {
			for _, m := range mounts {
				if !m.V2 || m.ReadOnly {
					continue
				}
				if dir, ok := cgroupDirFor(m, line.Path); ok {
					l.V2Dir = dir
					break
				}
			}
			continue
		}
		for _, m := range mounts {
			if m.V2 || m.ReadOnly || !cgroupMountCarries(m, line.Controllers) {
				continue
			}
			dir, ok := cgroupDirFor(m, line.Path)
			if !ok {
				continue
			}
			for _, c := range line.Controllers {
				if !strings.HasPrefix(c, "name=") {
					l.V1Dirs[c] = dir
				}
			}
			break
		}
	}
	return l
}

// cgroupMountCarries reports whether a v1 mount is the hierarchy holding exactly
// these controllers: every one of them appears in its options.
func cgroupMountCarries(m cgroupMount, ctrls []string) bool {
	if len(ctrls) == 0 {
		return false
	}
	for _, c := range ctrls {
		if !m.hasOption(c) {
			return false
		}
	}
	return true
}

// cgroupWrite is one value written to one controller file.
type cgroupWrite struct {
	File  string
	Value string
	// Optional files are skipped when absent: swap accounting
	// (memory.swap.max, memory.memsw.limit_in_bytes) exists only when the
	// kernel has swap accounting enabled.
	Optional bool
}

// cgroupLimitWrites returns, in order, the writes that set controller ctrl
// to the limit in lim on a v2 or v1 hierarchy. Unset limits are written as
// "max" (-1 on v1) rather than skipped, so a reused directory left over from
// an earlier run with a limit is reset to unlimited.
//
// The memory limit covers swap too: a silo may not escape memory.max by
// being swapped out, so memory.swap.max is 0 on v2 and memsw equals the
// limit on v1. The v1 memsw writes are ordered to keep memsw ≥ the memory
// limit at every step, which the kernel enforces.
func cgroupLimitWrites(ctrl string, v2 bool, lim config.Limits) ([]cgroupWrite, error) {
	switch ctrl {
	case cgroupMemory:
		if lim.MemoryBytes < 0 {
			return nil, fmt.Errorf("memory limit %d is negative", lim.MemoryBytes)
		}
		if v2 {
			if lim.MemoryBytes == 0 {
				return []cgroupWrite{
					{File: "memory.max", Value: "max"},
					{File: "memory.swap.max", Value: "max", Optional: true},
				}, nil
			}
			return []cgroupWrite{
				{File: "memory.max", Value: strconv.FormatInt(lim.MemoryBytes, 10)},
				{File: "memory.swap.max", Value: "0", Optional: true},
			}, nil
		}
		if lim.MemoryBytes == 0 {
			return []cgroupWrite{
				{File: "memory.memsw.limit_in_bytes", Value: "-1", Optional: true},
				{File: "memory.limit_in_bytes", Value: "-1"},
			}, nil
		}
		v := strconv.FormatInt(lim.MemoryBytes, 10)
		return []cgroupWrite{
			{File: "memory.memsw.limit_in_bytes", Value: "-1", Optional: true},
			{File: "memory.limit_in_bytes", Value: v},
			{File: "memory.memsw.limit_in_bytes", Value: v, Optional: true},
		}, nil
	case cgroupCPU:
		quota, err := cgroupCPUQuota(lim.CPU)
		if err != nil {
			return nil, err
		}
		period := strconv.Itoa(cgroupCFSPeriod)
		if v2 {
			q := "max"
			if quota > 0 {
				q = strconv.FormatInt(quota, 10)
			}
			return []cgroupWrite{{File: "cpu.max", Value: q + " " + period}}, nil
		}
		q := "-1"
		if quota > 0 {
			q = strconv.FormatInt(quota, 10)
		}
		return []cgroupWrite{
			{File: "cpu.cfs_period_us", Value: period},
			{File: "cpu.cfs_quota_us", Value: q},
		}, nil
	case cgroupPids:
		if lim.Pids < 0 {
			return nil, fmt.Errorf("pids limit %d is negative", lim.Pids)
		}
		v := "max"
		if lim.Pids > 0 {
			v = strconv.FormatInt(lim.Pids, 10)
		}
		return []cgroupWrite{{File: "pids.max", Value: v}}, nil
	}
	return nil, nil
}

// cgroupCPUQuota converts a number of CPUs into a CFS quota per
// cgroupCFSPeriod: 0.5 CPU is 50000 µs of every 100000 µs. Zero means
// unlimited (quota 0 is returned); the result is never below the kernel's
// 1 ms minimum.
func cgroupCPUQuota(cpu float64) (int64, error) {
	if math.IsNaN(cpu) || math.IsInf(cpu, 0) || cpu < 0 {
		return 0, fmt.Errorf("cpu limit %v is not a non-negative number", cpu)
	}
	if cpu == 0 {
		return 0, nil
	}
	q := math.Round(cpu * cgroupCFSPeriod)
	if q > math.MaxInt64/2 {
		return 0, fmt.Errorf("cpu limit %v is too large", cpu)
	}
	if q < cgroupMinQuota {
		q = cgroupMinQuota
	}
	return int64(q), nil
}

// cgroupLimitSet reports whether lim asks for a limit on ctrl.
func cgroupLimitSet(ctrl string, lim config.Limits) bool {
	switch ctrl {
	case cgroupMemory:
		return lim.MemoryBytes != 0
	case cgroupCPU:
		return lim.CPU != 0
	case cgroupPids:
		return lim.Pids != 0
	}
	return false
}

// cgroupParseValue parses a single-number controller file such as
// memory.current or pids.current.
func cgroupParseValue(data []byte) (uint64, error) {
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return math.MaxUint64, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// cgroupParseKeyed returns the value of key in a flat-keyed file such as
// cpu.stat ("usage_usec 1234").
func cgroupParseKeyed(data []byte, key string) (uint64, bool) {
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
