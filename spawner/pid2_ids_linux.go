//go:build linux && !386 && !arm

package spawner

import "golang.org/x/sys/unix"

// The id system calls taking 32-bit ids (the only ones on 64-bit
// architectures).
const (
	sysSetgroups = unix.SYS_SETGROUPS
	sysSetgid    = unix.SYS_SETGID
	sysSetuid    = unix.SYS_SETUID
)
