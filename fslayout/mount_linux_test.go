package fslayout

import (
	"errors"
	"io/fs"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMountFlags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		flags uintptr
		want  string
	}{
		{0, "0"},
		{unix.MS_BIND | unix.MS_REC, "MS_BIND|MS_REC"},
		{unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV, "MS_RDONLY|MS_NOSUID|MS_NODEV|MS_REMOUNT|MS_BIND"},
		{unix.MS_REC | unix.MS_PRIVATE, "MS_REC|MS_PRIVATE"},
		{unix.MS_BIND | 1<<31, "MS_BIND|0x80000000"},
	}
	for _, tc := range cases {
		if got := MountFlags(tc.flags); got != tc.want {
			t.Errorf("MountFlags(%#x) = %q, want %q", tc.flags, got, tc.want)
		}
	}
}

func TestMountErrorMessage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		err  *MountError
		want string
		is   error
	}{
		{"bind", &MountError{Op: "bind", Source: "/srv/x", Target: "/import", Origin: "config.yaml:14", Flags: unix.MS_BIND | unix.MS_REC, Err: unix.ENOENT},
			"bind /srv/x -> /import (config.yaml:14, MS_BIND|MS_REC): no such file or directory", fs.ErrNotExist},
		{"tmpfs with data", &MountError{Op: "tmpfs", Source: "tmpfs", Target: "/tmp", Flags: unix.MS_NOSUID, Data: "mode=1777", Err: unix.EPERM},
			"tmpfs tmpfs -> /tmp (MS_NOSUID, mode=1777): operation not permitted", fs.ErrPermission},
		{"target only", &MountError{Op: "pivot_root", Target: "/run/silo-proxy/roots/a", Err: unix.EINVAL},
			"pivot_root /run/silo-proxy/roots/a: invalid argument", unix.EINVAL},
		{"no error", &MountError{Op: "remount", Target: "/"}, "remount /: failed", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q\nwant      %q", got, tc.want)
			}
			if tc.is != nil && !errors.Is(tc.err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", tc.err, tc.is)
			}
		})
	}
}

func TestLockedFlags(t *testing.T) {
	t.Parallel()
	got := lockedFlags(unix.ST_NOSUID | unix.ST_NODEV | unix.ST_RELATIME | unix.ST_RDONLY | 0x20 /* ST_VALID */)
	want := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RELATIME | unix.MS_RDONLY)
	if got != want {
		t.Errorf("lockedFlags = %s, want %s", MountFlags(got), MountFlags(want))
	}
	if got := lockedFlags(stNoSymFollow | unix.ST_NOEXEC | unix.ST_NOATIME | unix.ST_NODIRATIME); got != unix.MS_NOSYMFOLLOW|unix.MS_NOEXEC|unix.MS_NOATIME|unix.MS_NODIRATIME {
		t.Errorf("lockedFlags = %s", MountFlags(got))
	}
}
