package spawner

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mode is how silos are isolated from the host, decided by the proxy's
// own privileges.
type Mode string

const (
	// ModePrivileged: the proxy runs as root (CAP_SETUID and CAP_SETGID on
	// the host), so every silo gets its own range of 65536 host ids, and
	// cgroup limits apply.
	ModePrivileged Mode = "privileged"
	// ModeRootless: the proxy runs as an ordinary user. Each silo's user
	// namespace maps only that user's uid and gid (as the silo's postgres
	// user, ns uid 1000); silo-init holds its mount capabilities as
	// ambient capabilities of that uid and clears them before the
	// postmaster starts. All silos share the one host uid, so they are
	// separated by mount, pid, net and ipc namespaces but not by file
	// ownership, and no cgroup limits apply.
	ModeRootless Mode = "rootless"
	// ModeUnavailable: user namespaces cannot be created here.
	ModeUnavailable Mode = "unavailable"
)

// capSetUID, capSetGID, capSetPCap, capNetAdmin and capSysAdmin are
// capability numbers from <linux/capability.h>.
const (
	capSetGID   = 6
	capSetUID   = 7
	capSetPCap  = 8
	capNetAdmin = 12
	capSysAdmin = 21
)

// DetectMode decides how this process would run silos and says why, for
// `silo-proxy check` and the proxy's startup log.
func DetectMode() (Mode, string) {
	return detectMode(os.Geteuid(), readProcFile)
}

func readProcFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

func detectMode(euid int, read func(string) (string, error)) (Mode, string) {
	if v, err := read("/proc/sys/user/max_user_namespaces"); err == nil && v == "0" {
		return ModeUnavailable, "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)"
	}
	if euid == 0 {
		eff, err := effectiveCaps(read)
		if err == nil {
			var missing []string
			for _, c := range []struct {
				bit  uint
				name string
			}{{capSetUID, "CAP_SETUID"}, {capSetGID, "CAP_SETGID"}, {capSysAdmin, "CAP_SYS_ADMIN"}} {
				if eff&(1<<c.bit) == 0 {
					missing = append(missing, c.name)
				}
			}
			if len(missing) > 0 {
				return ModeUnavailable, fmt.Sprintf("running as root but without %s: a uid range cannot be mapped (grant the capabilities or run as an ordinary user for rootless mode)", strings.Join(missing, ", "))
			}
		}
		return ModePrivileged, "running as root: each silo gets its own range of 65536 host uids and gids, and cgroup limits apply"
	}
	if v, err := read("/proc/sys/kernel/unprivileged_userns_clone"); err == nil && v == "0" {
		return ModeUnavailable, fmt.Sprintf("running as uid %d, and unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0); run as root", euid)
	}
	if v, err := read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); err == nil && v == "1" {
		return ModeUnavailable, fmt.Sprintf("running as uid %d, and AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1); run as root", euid)
	}
	return ModeRootless, fmt.Sprintf("running as uid %d, not root: every silo maps only that uid, so silos share one host uid and run without cgroup limits", euid)
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps(read func(string) (string, error)) (uint64, error) {
	s, err := read("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapEff line in /proc/self/status")
}
