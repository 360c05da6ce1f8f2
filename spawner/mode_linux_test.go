package spawner

import (
	"io/fs"
	"strings"
	"testing"
)

func TestDetectMode(t *testing.T) {
	t.Parallel()
	// CapEff with CAP_SETGID, CAP_SETUID and CAP_SYS_ADMIN, and without.
	const full = "Name:\tx\nCapEff:\t000001ffffffffff\n"
	const none = "Name:\tx\nCapEff:\t0000000000000000\n"
	cases := []struct {
		name  string
		euid  int
		files map[string]string
		want  Mode
		why   string
	}{
		{"root", 0, map[string]string{"/proc/self/status": full}, ModePrivileged, "root"},
		{"root without capabilities", 0, map[string]string{"/proc/self/status": none}, ModeUnavailable, "CAP_SETUID, CAP_SETGID, CAP_SYS_ADMIN"},
		{"user", 1000, map[string]string{}, ModeRootless, "uid 1000"},
		{"userns disabled", 0, map[string]string{"/proc/sys/user/max_user_namespaces": "0"}, ModeUnavailable, "max_user_namespaces"},
		{"debian sysctl off", 1000, map[string]string{"/proc/sys/kernel/unprivileged_userns_clone": "0"}, ModeUnavailable, "unprivileged_userns_clone"},
		{"debian sysctl off, root", 0, map[string]string{"/proc/sys/kernel/unprivileged_userns_clone": "0", "/proc/self/status": full}, ModePrivileged, "root"},
		{"apparmor", 1000, map[string]string{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1"}, ModeUnavailable, "AppArmor"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			read := func(p string) (string, error) {
				if v, ok := tc.files[p]; ok {
					return strings.TrimSpace(v), nil
				}
				return "", fs.ErrNotExist
			}
			mode, why := detectMode(tc.euid, read)
			if mode != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("detectMode = %s, %q; want %s mentioning %q", mode, why, tc.want, tc.why)
			}
		})
	}
}
