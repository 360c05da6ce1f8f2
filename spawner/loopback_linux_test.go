package spawner

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// inNewNetNS runs f on a locked thread moved into a new network namespace;
// the thread is discarded afterwards (the goroutine exits locked). f runs
// outside the test goroutine: it reports with t.Errorf and returns.
func inNewNetNS(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		f()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
}

// loopbackIsUp reads IFF_UP of lo in the calling thread's network
// namespace.
func loopbackIsUp() (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(loopbackName)
	if err != nil {
		return false, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return false, err
	}
	return ifr.Uint16()&unix.IFF_UP != 0, nil
}

// dialSelf listens on 127.0.0.1 and connects to that listener: the
// sockets belong to the calling thread's network namespace.
func dialSelf() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return err
	}
	return c.Close()
}

func TestLoopbackUp(t *testing.T) {
	t.Parallel()
	inNewNetNS(t, func() {
		if up, err := loopbackIsUp(); up || err != nil {
			t.Errorf("lo of a new network namespace: up=%v, %v; want down", up, err)
			return
		}
		if err := dialSelf(); !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENETUNREACH) {
			t.Errorf("127.0.0.1 with lo down: %v, want EADDRNOTAVAIL or ENETUNREACH", err)
		}
		for i := range 2 { // the second call finds lo up and changes nothing
			if err := loopbackUp(); err != nil {
				t.Errorf("loopbackUp (call %d): %v", i+1, err)
				return
			}
			if up, err := loopbackIsUp(); !up || err != nil {
				t.Errorf("after loopbackUp (call %d): up=%v, %v", i+1, up, err)
				return
			}
		}
		if err := dialSelf(); err != nil {
			t.Errorf("127.0.0.1 with lo up: %v", err)
		}
	})
}
