package spawner

import (
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/silo-proxy/silo-proxy/config"
)

// Fixtures are real files: this project's CI host (a v1/v2 hybrid whose
// memory cgroup is not the root), a pure v2 systemd host with a delegated
// unit, an old v1-only host with co-mounted cpu,cpuacct, and a container
// whose cgroup namespace bind-mounts a sub-tree.
const (
	cgroupHybridProcFile = `9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/10ef7f44f3c27c88e72b852045be5c55
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`
	cgroupHybridMountinfo = `23 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	cgroupV2ProcFile  = "0::/system.slice/silo-proxy.service\n"
	cgroupV2Mountinfo = `22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	cgroupV1ProcFile = `11:pids:/system.slice/silo-proxy.service
4:cpu,cpuacct:/system.slice/silo-proxy.service
3:memory:/system.slice/silo-proxy.service
1:name=systemd:/system.slice/silo-proxy.service
`
	cgroupV1Mountinfo = `25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
35 25 0:31 / /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
`
	cgroupNSProcFile  = "0::/docker/abc/sub\n"
	cgroupNSMountinfo = `600 500 0:40 /docker/abc /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw
601 500 0:40 /other /mnt/other\040dir rw - cgroup2 cgroup2 rw
`
)

func TestCgroupParseProcFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []cgroupProcLine
		wantErr bool
	}{
		{name: "v2", in: cgroupV2ProcFile, want: []cgroupProcLine{{ID: 0, Path: "/system.slice/silo-proxy.service"}}},
		{name: "v1 co-mounted", in: cgroupV1ProcFile, want: []cgroupProcLine{
			{ID: 11, Controllers: []string{"pids"}, Path: "/system.slice/silo-proxy.service"},
			{ID: 4, Controllers: []string{"cpu", "cpuacct"}, Path: "/system.slice/silo-proxy.service"},
			{ID: 3, Controllers: []string{"memory"}, Path: "/system.slice/silo-proxy.service"},
			{ID: 1, Controllers: []string{"name=systemd"}, Path: "/system.slice/silo-proxy.service"},
		}},
		{name: "path with colon", in: "0::/a:b\n", want: []cgroupProcLine{{Path: "/a:b"}}},
		{name: "empty", in: "", want: nil},
		{name: "two fields", in: "0:/x\n", wantErr: true},
		{name: "bad id", in: "x::/\n", wantErr: true},
		{name: "negative id", in: "-1::/\n", wantErr: true},
		{name: "relative path", in: "0::x\n", wantErr: true},
		{name: "empty controller", in: "3:cpu,:/\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := cgroupParseProcFile([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("hybrid", func(t *testing.T) {
		t.Parallel()
		got, err := cgroupParseProcFile([]byte(cgroupHybridProcFile))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 10 {
			t.Fatalf("got %d lines, want 10", len(got))
		}
		if !got[9].v2() || got[9].Path != "/" {
			t.Errorf("last line %+v is not the v2 root", got[9])
		}
		if got[5].v2() || got[5].Controllers[0] != "memory" || got[5].Path != "/process_api/10ef7f44f3c27c88e72b852045be5c55" {
			t.Errorf("memory line = %+v", got[5])
		}
	})
}

func TestCgroupParseMountinfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []cgroupMount
		wantErr bool
	}{
		{name: "v2 only", in: cgroupV2Mountinfo, want: []cgroupMount{
			{Root: "/", Mountpoint: "/sys/fs/cgroup", V2: true},
		}},
		{name: "v1 ro and co-mounted", in: cgroupV1Mountinfo, want: []cgroupMount{
			{Root: "/", Mountpoint: "/sys/fs/cgroup/systemd", Options: []string{"rw", "xattr", "name=systemd"}},
			{Root: "/", Mountpoint: "/sys/fs/cgroup/cpu,cpuacct", Options: []string{"rw", "cpu", "cpuacct"}},
			{Root: "/", Mountpoint: "/sys/fs/cgroup/memory", Options: []string{"rw", "memory"}},
			{Root: "/", Mountpoint: "/sys/fs/cgroup/pids", Options: []string{"rw", "pids"}, ReadOnly: true},
		}},
		{name: "namespace root and escaped space", in: cgroupNSMountinfo, want: []cgroupMount{
			{Root: "/docker/abc", Mountpoint: "/sys/fs/cgroup", V2: true},
			{Root: "/other", Mountpoint: "/mnt/other dir", V2: true},
		}},
		{name: "no optional fields", in: "1 0 0:1 / /c rw - cgroup2 none rw\n", want: []cgroupMount{
			{Root: "/", Mountpoint: "/c", V2: true},
		}},
		{name: "other filesystems only", in: "22 1 259:2 / / rw shared:1 - ext4 /dev/x rw\n", want: nil},
		{name: "no separator", in: "22 1 259:2 / / rw shared:1 ext4 /dev/x rw\n", wantErr: true},
		{name: "too short", in: "22 1 259:2 /\n", wantErr: true},
		{name: "separator without fstype", in: "22 1 259:2 / /x rw -\n", wantErr: true},
		{name: "truncated escape", in: "1 0 0:1 / /c\\04 rw - cgroup2 none rw\n", wantErr: true},
		{name: "bad escape", in: "1 0 0:1 / /c\\9zz rw - cgroup2 none rw\n", wantErr: true},
		{name: "relative mount point", in: "1 0 0:1 / c rw - cgroup2 none rw\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := cgroupParseMountinfo([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestCgroupResolveLayout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, cgroupProcLine, mountinfo string
		want                            cgroupLayout
	}{
		{
			name: "hybrid", cgroupProcLine: cgroupHybridProcFile, mountinfo: cgroupHybridMountinfo,
			want: cgroupLayout{V2Dir: "/sys/fs/cgroup/unified", V1Dirs: map[string]string{
				"pids":    "/sys/fs/cgroup/pids",
				"blkio":   "/sys/fs/cgroup/blkio",
				"freezer": "/sys/fs/cgroup/freezer",
				"devices": "/sys/fs/cgroup/devices",
				"memory":  "/sys/fs/cgroup/memory/process_api/10ef7f44f3c27c88e72b852045be5c55",
				"cpuset":  "/sys/fs/cgroup/cpuset",
				"cpuacct": "/sys/fs/cgroup/cpuacct",
				"cpu":     "/sys/fs/cgroup/cpu",
			}},
		},
		{
			name: "v2 unit", cgroupProcLine: cgroupV2ProcFile, mountinfo: cgroupV2Mountinfo,
			want: cgroupLayout{V2Dir: "/sys/fs/cgroup/system.slice/silo-proxy.service", V1Dirs: map[string]string{}},
		},
		{
			// pids is mounted read-only: it must not be used.
			name: "v1 co-mounted", cgroupProcLine: cgroupV1ProcFile, mountinfo: cgroupV1Mountinfo,
			want: cgroupLayout{V1Dirs: map[string]string{
				"cpu":     "/sys/fs/cgroup/cpu,cpuacct/system.slice/silo-proxy.service",
				"cpuacct": "/sys/fs/cgroup/cpu,cpuacct/system.slice/silo-proxy.service",
				"memory":  "/sys/fs/cgroup/memory/system.slice/silo-proxy.service",
			}},
		},
		{
			name: "cgroup namespace", cgroupProcLine: cgroupNSProcFile, mountinfo: cgroupNSMountinfo,
			want: cgroupLayout{V2Dir: "/sys/fs/cgroup/sub", V1Dirs: map[string]string{}},
		},
		{
			name: "outside the mounted subtree", cgroupProcLine: "0::/elsewhere\n", mountinfo: cgroupNSMountinfo,
			want: cgroupLayout{V1Dirs: map[string]string{}},
		},
		{
			name: "path escaping the namespace", cgroupProcLine: "0::/../../x\n", mountinfo: cgroupV2Mountinfo,
			want: cgroupLayout{V1Dirs: map[string]string{}},
		},
		{
			name: "no cgroup mounts", cgroupProcLine: cgroupHybridProcFile, mountinfo: "",
			want: cgroupLayout{V1Dirs: map[string]string{}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lines, err := cgroupParseProcFile([]byte(tt.cgroupProcLine))
			if err != nil {
				t.Fatal(err)
			}
			mounts, err := cgroupParseMountinfo([]byte(tt.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			got := cgroupResolveLayout(lines, mounts)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestCgroupLimitWrites(t *testing.T) {
	t.Parallel()
	const mib256 = 256 << 20
	tests := []struct {
		name    string
		ctrl    string
		v2      bool
		lim     config.Limits
		want    []cgroupWrite
		wantErr bool
	}{
		{name: "cpu half v2", ctrl: cgroupCPU, v2: true, lim: config.Limits{CPU: 0.5},
			want: []cgroupWrite{{File: "cpu.max", Value: "50000 100000"}}},
		{name: "cpu half v1", ctrl: cgroupCPU, lim: config.Limits{CPU: 0.5},
			want: []cgroupWrite{{File: "cpu.cfs_period_us", Value: "100000"}, {File: "cpu.cfs_quota_us", Value: "50000"}}},
		{name: "cpu two v2", ctrl: cgroupCPU, v2: true, lim: config.Limits{CPU: 2},
			want: []cgroupWrite{{File: "cpu.max", Value: "200000 100000"}}},
		{name: "cpu tiny rounds up to 1ms", ctrl: cgroupCPU, v2: true, lim: config.Limits{CPU: 0.001},
			want: []cgroupWrite{{File: "cpu.max", Value: "1000 100000"}}},
		{name: "cpu unset v2", ctrl: cgroupCPU, v2: true,
			want: []cgroupWrite{{File: "cpu.max", Value: "max 100000"}}},
		{name: "cpu unset v1", ctrl: cgroupCPU,
			want: []cgroupWrite{{File: "cpu.cfs_period_us", Value: "100000"}, {File: "cpu.cfs_quota_us", Value: "-1"}}},
		{name: "cpu negative", ctrl: cgroupCPU, lim: config.Limits{CPU: -1}, wantErr: true},
		{name: "cpu NaN", ctrl: cgroupCPU, lim: config.Limits{CPU: math.NaN()}, wantErr: true},
		{name: "cpu infinite", ctrl: cgroupCPU, lim: config.Limits{CPU: math.Inf(1)}, wantErr: true},
		{name: "memory v2", ctrl: cgroupMemory, v2: true, lim: config.Limits{MemoryBytes: mib256},
			want: []cgroupWrite{{File: "memory.max", Value: "268435456"}, {File: "memory.swap.max", Value: "0", Optional: true}}},
		{name: "memory v1", ctrl: cgroupMemory, lim: config.Limits{MemoryBytes: mib256},
			want: []cgroupWrite{
				{File: "memory.memsw.limit_in_bytes", Value: "-1", Optional: true},
				{File: "memory.limit_in_bytes", Value: "268435456"},
				{File: "memory.memsw.limit_in_bytes", Value: "268435456", Optional: true},
			}},
		{name: "memory unset v2", ctrl: cgroupMemory, v2: true,
			want: []cgroupWrite{{File: "memory.max", Value: "max"}, {File: "memory.swap.max", Value: "max", Optional: true}}},
		{name: "memory unset v1", ctrl: cgroupMemory,
			want: []cgroupWrite{{File: "memory.memsw.limit_in_bytes", Value: "-1", Optional: true}, {File: "memory.limit_in_bytes", Value: "-1"}}},
		{name: "memory negative", ctrl: cgroupMemory, lim: config.Limits{MemoryBytes: -5}, wantErr: true},
		{name: "pids v2", ctrl: cgroupPids, v2: true, lim: config.Limits{Pids: 64},
			want: []cgroupWrite{{File: "pids.max", Value: "64"}}},
		{name: "pids v1 same file", ctrl: cgroupPids, lim: config.Limits{Pids: 200},
			want: []cgroupWrite{{File: "pids.max", Value: "200"}}},
		{name: "pids unset", ctrl: cgroupPids,
			want: []cgroupWrite{{File: "pids.max", Value: "max"}}},
		{name: "pids negative", ctrl: cgroupPids, lim: config.Limits{Pids: -1}, wantErr: true},
		{name: "cpuacct has no limit", ctrl: cgroupCPUAcct, lim: config.Limits{CPU: 1}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := cgroupLimitWrites(tt.ctrl, tt.v2, tt.lim)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestCgroupNames(t *testing.T) {
	t.Parallel()
	a, b := cgroupInstanceDir("/var/lib/silo-proxy"), cgroupInstanceDir("/tmp/test-state")
	if a == b {
		t.Errorf("two state dirs share the cgroup directory %s", a)
	}
	if a != cgroupInstanceDir("/var/lib/silo-proxy") {
		t.Error("the instance directory is not stable across calls")
	}
	if !strings.HasPrefix(a, "silo-proxy-") || strings.ContainsAny(a, "/ ") {
		t.Errorf("instance directory %q", a)
	}
	for _, name := range []string{"", ".", "..", "a/b", "x\x00", "supervisor"} {
		if cgroupValidName(name) == nil {
			t.Errorf("silo name %q accepted as a cgroup directory", name)
		}
	}
	for _, name := range []string{"sales", "default", "a.b", "..x"} {
		if err := cgroupValidName(name); err != nil {
			t.Errorf("silo name %q rejected: %v", name, err)
		}
	}
}

func TestCgroupParseFiles(t *testing.T) {
	t.Parallel()
	cpuStat := "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"
	if v, ok := cgroupParseKeyed([]byte(cpuStat), "usage_usec"); !ok || v != 1500000 {
		t.Errorf("usage_usec = %d, %v", v, ok)
	}
	if _, ok := cgroupParseKeyed([]byte(cpuStat), "usage"); ok {
		t.Error("a key prefix matched")
	}
	if v, err := cgroupParseValue([]byte("4096\n")); err != nil || v != 4096 {
		t.Errorf("cgroupParseValue = %d, %v", v, err)
	}
	if v, err := cgroupParseValue([]byte("max\n")); err != nil || v != math.MaxUint64 {
		t.Errorf("cgroupParseValue(max) = %d, %v", v, err)
	}
	if _, err := cgroupParseValue([]byte("-3")); err == nil {
		t.Error("negative value accepted")
	}
	if pp, err := cgroupParseStatPPid([]byte("42 (a) b) c) S 7 42 42 0 -1")); err != nil || pp != 7 {
		t.Errorf("cgroupParseStatPPid = %d, %v", pp, err)
	}
	if _, err := cgroupParseStatPPid([]byte("42 (x")); err == nil {
		t.Error("truncated stat accepted")
	}
	if pids, err := cgroupParsePids([]byte("1\n20\n")); err != nil || !reflect.DeepEqual(pids, []int{1, 20}) {
		t.Errorf("cgroupParsePids = %v, %v", pids, err)
	}
	if _, err := cgroupParsePids([]byte("1\nzz\n")); err == nil {
		t.Error("bad pid accepted")
	}
}

func FuzzCgroupProcFile(f *testing.F) {
	for _, s := range []string{cgroupHybridProcFile, cgroupV2ProcFile, cgroupV1ProcFile, cgroupNSProcFile, "0::/a:b\n", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		lines, err := cgroupParseProcFile([]byte(in))
		if err != nil {
			return
		}
		for _, l := range lines {
			if !strings.HasPrefix(l.Path, "/") || l.ID < 0 {
				t.Fatalf("accepted line %+v", l)
			}
			for _, c := range l.Controllers {
				if c == "" || strings.Contains(c, ",") {
					t.Fatalf("bad controller %q", c)
				}
			}
		}
		// Whatever was accepted resolves without panicking and only to
		// directories below a mount point.
		mounts, _ := cgroupParseMountinfo([]byte(cgroupHybridMountinfo + cgroupNSMountinfo))
		l := cgroupResolveLayout(lines, mounts)
		for _, dir := range l.V1Dirs {
			if !strings.HasPrefix(dir, "/sys/fs/cgroup/") || strings.Contains(dir, "/../") {
				t.Fatalf("resolved outside the mounts: %q", dir)
			}
		}
	})
}

func FuzzCgroupMountinfo(f *testing.F) {
	for _, s := range []string{cgroupHybridMountinfo, cgroupV2Mountinfo, cgroupV1Mountinfo, cgroupNSMountinfo,
		"1 0 0:1 / /c\\040d rw - cgroup2 none rw\n", "1 0 0:1 / /c\\04 rw - cgroup2 none rw\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		mounts, err := cgroupParseMountinfo([]byte(in))
		if err != nil {
			return
		}
		for _, m := range mounts {
			if !strings.HasPrefix(m.Root, "/") || !strings.HasPrefix(m.Mountpoint, "/") {
				t.Fatalf("accepted mount %+v", m)
			}
			if m.V2 && m.Options != nil {
				t.Fatalf("v2 mount with v1 options: %+v", m)
			}
			if dir, ok := cgroupDirFor(m, "/a/b"); ok && !strings.HasPrefix(dir, m.Mountpoint) {
				t.Fatalf("cgroupDirFor left the mount: %q not below %q", dir, m.Mountpoint)
			}
		}
	})
}
