package spawner

import (
	"os"

	"golang.org/x/sys/unix"
)

// loopbackName is the loopback interface every network namespace is
// created with.
const loopbackName = "lo"

// loopbackUp sets IFF_UP on lo in the calling thread's network namespace.
// A new network namespace holds only lo, and holds it down: without this,
// even 127.0.0.1 inside the silo answers "Network is unreachable", which
// breaks extensions and tools that talk to themselves over loopback
// (a background worker's own listener, dblink to a local port). Bringing
// lo up reaches nothing outside: it is the silo's own loopback, not the
// host's. It takes CAP_NET_ADMIN in the user namespace that owns the
// network namespace, which silo-init holds.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket(AF_INET)", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(loopbackName)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("ioctl(SIOCGIFFLAGS lo)", err)
	}
	if ifr.Uint16()&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return os.NewSyscallError("ioctl(SIOCSIFFLAGS lo up)", err)
	}
	return nil
}
