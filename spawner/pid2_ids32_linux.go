//go:build linux && (386 || arm)

package spawner

import "golang.org/x/sys/unix"

// The id system calls taking 32-bit ids: the plain ones of these
// architectures take 16-bit ids.
const (
	sysSetgroups = unix.SYS_SETGROUPS32
	sysSetgid    = unix.SYS_SETGID32
	sysSetuid    = unix.SYS_SETUID32
)
