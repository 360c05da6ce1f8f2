package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// setSiloCPUWeight is an experiment (-silo-cpu-shares): it gives the
// running silo's cpu cgroup, and the silo-proxy cgroup above it, the CPU
// weight of n/1024 ordinary processes. The spawner puts every silo in a
// cgroup of its own, and with the cpu controller each cgroup competes for
// CPU as one scheduling entity of weight 1024 (cgroup v1 cpu.shares; 100
// in v2 cpu.weight) however many backends run inside it, while a plain
// postmaster's backends, pgbench, PgBouncer and silo-proxy each compete
// as a process. On a saturated machine that moves CPU from a silo's
// backends to everything else; this knob measures how much.
func (b *bench) setSiloCPUWeight(n int) error {
	body, err := b.proxy.admin("GET", "/silos")
	if err != nil {
		return err
	}
	var list []struct {
		Name string `json:"name"`
		Pid  int    `json:"pid"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return err
	}
	pid := 0
	for _, s := range list {
		if s.Name == benchSilo {
			pid = s.Pid
		}
	}
	if pid == 0 {
		return fmt.Errorf("no pid for silo %s", benchSilo)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var dir, file, value string
		switch {
		case f[1] == "" && f[0] == "0":
			dir, file, value = filepath.Join("/sys/fs/cgroup", f[2]), "cpu.weight", strconv.Itoa(max(1, min(10000, n*100/1024)))
		case containsController(f[1], "cpu"):
			dir, file, value = filepath.Join("/sys/fs/cgroup", f[1], f[2]), "cpu.shares", strconv.Itoa(n)
		default:
			continue
		}
		// The silo's own cgroup and the silo-proxy cgroup that holds
		// every silo: both compete at their level as one entity.
		for _, d := range []string{dir, filepath.Dir(dir)} {
			p := filepath.Join(d, file)
			if _, err := os.Stat(p); err != nil {
				continue
			}
			if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	return nil
}

func containsController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}
