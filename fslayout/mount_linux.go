package fslayout

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// MountError is a failed step of building a silo's root: a mount, a
// remount, a mount point or generated file that could not be created, or
// the pivot itself. It names the in-silo Target (what an operator wrote in
// the config) and the host Source, prints the mount flags by their MS_*
// names and keeps the errno reachable through Unwrap, so callers can test
// errors.Is(err, fs.ErrNotExist) and operators read
// `bind /srv/x -> /import (config.yaml:14): no such file or directory`.
type MountError struct {
	// Op is the step: the plan op kind ("bind", "tmpfs", "proc", "dev",
	// "file", "symlink", "dir") or a step of the root switch ("rprivate",
	// "root", "remount", "pivot_root", "umount").
	Op     string
	Source string
	Target string
	Flags  uintptr
	Data   string
	// Origin is the MountOp's Origin: where the mount was declared.
	Origin string
	Err    error
}

func (e *MountError) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Source != "" {
		b.WriteByte(' ')
		b.WriteString(e.Source)
		if e.Target != "" {
			b.WriteString(" ->")
		}
	}
	if e.Target != "" {
		b.WriteByte(' ')
		b.WriteString(e.Target)
	}
	var notes []string
	if e.Origin != "" {
		notes = append(notes, e.Origin)
	}
	if e.Flags != 0 {
		notes = append(notes, MountFlags(e.Flags))
	}
	if e.Data != "" {
		notes = append(notes, e.Data)
	}
	if len(notes) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(notes, ", "))
		b.WriteByte(')')
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("failed")
	}
	return b.String()
}

func (e *MountError) Unwrap() error { return e.Err }

// mountFlagNames lists the mount(2) flags in the order they are printed.
var mountFlagNames = []struct {
	flag uintptr
	name string
}{
	{unix.MS_RDONLY, "MS_RDONLY"},
	{unix.MS_NOSUID, "MS_NOSUID"},
	{unix.MS_NODEV, "MS_NODEV"},
	{unix.MS_NOEXEC, "MS_NOEXEC"},
	{unix.MS_SYNCHRONOUS, "MS_SYNCHRONOUS"},
	{unix.MS_REMOUNT, "MS_REMOUNT"},
	{unix.MS_MANDLOCK, "MS_MANDLOCK"},
	{unix.MS_DIRSYNC, "MS_DIRSYNC"},
	{unix.MS_NOSYMFOLLOW, "MS_NOSYMFOLLOW"},
	{unix.MS_NOATIME, "MS_NOATIME"},
	{unix.MS_NODIRATIME, "MS_NODIRATIME"},
	{unix.MS_BIND, "MS_BIND"},
	{unix.MS_MOVE, "MS_MOVE"},
	{unix.MS_REC, "MS_REC"},
	{unix.MS_SILENT, "MS_SILENT"},
	{unix.MS_POSIXACL, "MS_POSIXACL"},
	{unix.MS_UNBINDABLE, "MS_UNBINDABLE"},
	{unix.MS_PRIVATE, "MS_PRIVATE"},
	{unix.MS_SLAVE, "MS_SLAVE"},
	{unix.MS_SHARED, "MS_SHARED"},
	{unix.MS_RELATIME, "MS_RELATIME"},
	{unix.MS_STRICTATIME, "MS_STRICTATIME"},
	{unix.MS_LAZYTIME, "MS_LAZYTIME"},
}

// MountFlags renders mount(2) flags as MS_* names joined by '|'; bits
// without a name are appended in hex so nothing is silently dropped.
func MountFlags(flags uintptr) string {
	if flags == 0 {
		return "0"
	}
	var names []string
	for _, f := range mountFlagNames {
		if flags&f.flag != 0 {
			names = append(names, f.name)
			flags &^= f.flag
		}
	}
	if flags != 0 {
		names = append(names, fmt.Sprintf("%#x", flags))
	}
	return strings.Join(names, "|")
}

// stNoSymFollow is ST_NOSYMFOLLOW from <sys/statvfs.h> (Linux 5.10), which
// golang.org/x/sys does not name.
const stNoSymFollow = 0x2000

// mountErr is the template of a MountError; mount fills in Err.
type mountErr = MountError

// mount calls mount(2) on path (which may be a /proc/self/fd/N alias of the
// real target) and reports failures with the in-silo names in e.
func mount(e mountErr, source, path, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, path, fstype, flags, data); err != nil {
		e.Flags = flags
		e.Data = data
		e.Err = err
		return &e
	}
	return nil
}

// lockedFlags converts statfs(2) f_flags into the mount flags a remount
// must repeat. In a user namespace the kernel locks nosuid, nodev, noexec
// and the atime flags of mounts inherited from a more privileged namespace:
// a remount that omits them fails with EPERM (runc's setReadonly retries
// with these for the same reason).
func lockedFlags(f int64) uintptr {
	var out uintptr
	for _, m := range []struct {
		st int64
		ms uintptr
	}{
		{unix.ST_NOSUID, unix.MS_NOSUID},
		{unix.ST_NODEV, unix.MS_NODEV},
		{unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME},
		{unix.ST_NODIRATIME, unix.MS_NODIRATIME},
		{unix.ST_RELATIME, unix.MS_RELATIME},
		{stNoSymFollow, unix.MS_NOSYMFOLLOW},
		{unix.ST_RDONLY, unix.MS_RDONLY},
	} {
		if f&m.st != 0 {
			out |= m.ms
		}
	}
	return out
}
