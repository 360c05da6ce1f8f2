package main

import (
	"log"
	"net"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loop relays every session on one OS thread: a level-triggered epoll set
// holding both descriptors of each session. A readable descriptor is read
// once into the loop's shared buffer and written straight to its peer; only
// when the peer cannot take everything is the rest copied into a buffer of
// its own, reading from that side paused, and the peer watched for
// EPOLLOUT. So a round trip costs epoll_wait, read and write per
// direction, several sessions' events share one epoll_wait under load, and
// an idle session holds no buffer and no goroutine.
type loop struct {
	epfd   int
	wakefd int // eventfd: new sessions are waiting in pending
	// raw makes the loop's own system calls with syscall.RawSyscall:
	// the Go scheduler then does not see a thread in a system call, so
	// sysmon does not keep waking up every 20 µs to retake its P. The
	// loop owns that P (and its OS thread) for good.
	raw bool

	mu      sync.Mutex
	pending [][2]int

	sides map[int]*side
	buf   []byte
}

// side is one descriptor of a session.
type side struct {
	fd      int
	peer    *side
	pending []byte // read from this side, not yet written to peer
	eof     bool   // this side sent EOF; peer was half-closed
	closed  bool
}

func newLoop(raw bool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	l := &loop{epfd: epfd, wakefd: wakefd, raw: raw, sides: map[int]*side{}, buf: make([]byte, rwBufferSize)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		return nil, err
	}
	return l, nil
}

// rawFD duplicates the descriptor of c and closes c, which removes it
// from the Go runtime's poller; the duplicate shares the open file, so it
// stays non-blocking (and TCP_NODELAY, which Go set on the client socket).
func rawFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.Dup(int(s)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

// add hands a session to the loop.
func (l *loop) add(client *net.TCPConn, server *net.UnixConn) {
	cfd, err := rawFD(client)
	client.Close()
	if err != nil {
		server.Close()
		return
	}
	sfd, err := rawFD(server)
	server.Close()
	if err != nil {
		unix.Close(cfd)
		return
	}
	l.mu.Lock()
	l.pending = append(l.pending, [2]int{cfd, sfd})
	l.mu.Unlock()
	var one = [8]byte{1}
	unix.Write(l.wakefd, one[:])
}

func (l *loop) run() {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := l.wait(events)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			log.Fatalf("epoll_wait: %v", err)
		}
		for i := range n {
			fd := int(events[i].Fd)
			if fd == l.wakefd {
				l.accept()
				continue
			}
			s := l.sides[fd]
			if s == nil || s.closed {
				continue
			}
			ev := events[i].Events
			if ev&unix.EPOLLERR != 0 || ev&unix.EPOLLHUP != 0 && s.eof {
				// Reset, or hung up after its EOF was passed on: these
				// are reported even when not asked for, so end here.
				l.close(s)
				continue
			}
			if ev&unix.EPOLLOUT != 0 {
				l.flush(s.peer, s)
			}
			if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 && !s.closed {
				l.readFrom(s)
			}
		}
	}
}

// accept registers the sessions add queued.
func (l *loop) accept() {
	var b [8]byte
	unix.Read(l.wakefd, b[:])
	l.mu.Lock()
	list := l.pending
	l.pending = nil
	l.mu.Unlock()
	for _, p := range list {
		c, s := &side{fd: p[0]}, &side{fd: p[1]}
		c.peer, s.peer = s, c
		l.sides[c.fd], l.sides[s.fd] = c, s
		for _, x := range []*side{c, s} {
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, x.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(x.fd)}); err != nil {
				l.close(c)
				break
			}
		}
	}
}

// readFrom reads once from s and passes the bytes to its peer.
func (l *loop) readFrom(s *side) {
	if s.eof || s.pending != nil {
		return
	}
	n, err := l.read(s.fd, l.buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		l.close(s)
		return
	case n == 0:
		s.eof = true
		unix.Shutdown(s.peer.fd, unix.SHUT_WR)
		if s.peer.eof {
			l.close(s)
			return
		}
		// Stop watching a side that has nothing more to say.
		l.modify(s, 0)
		return
	}
	w, err := l.write(s.peer.fd, l.buf[:n])
	if err != nil && err != unix.EAGAIN {
		l.close(s)
		return
	}
	if w < 0 {
		w = 0
	}
	if w < n {
		s.pending = append([]byte(nil), l.buf[w:n]...)
		l.modify(s, 0)
		l.modify(s.peer, l.events(s.peer)|unix.EPOLLOUT)
	}
}

// flush writes what was read from from earlier to its peer to, which
// has become writable.
func (l *loop) flush(from, to *side) {
	if from.pending == nil {
		l.modify(to, l.events(to))
		return
	}
	w, err := l.write(to.fd, from.pending)
	if err != nil && err != unix.EAGAIN {
		l.close(from)
		return
	}
	if w > 0 {
		from.pending = from.pending[w:]
	}
	if len(from.pending) == 0 {
		from.pending = nil
		l.modify(to, l.events(to))
		l.modify(from, l.events(from))
	}
}

// events is what to watch s for when nothing is pending towards it.
func (l *loop) events(s *side) uint32 {
	if s.eof || s.pending != nil {
		return 0
	}
	return unix.EPOLLIN | unix.EPOLLRDHUP
}

func (l *loop) modify(s *side, ev uint32) {
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, s.fd, &unix.EpollEvent{Events: ev, Fd: int32(s.fd)})
}

// close ends the session s belongs to.
func (l *loop) close(s *side) {
	for _, x := range []*side{s, s.peer} {
		if x.closed {
			continue
		}
		x.closed = true
		unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, x.fd, nil)
		unix.Close(x.fd)
		delete(l.sides, x.fd)
	}
}

func (l *loop) wait(events []unix.EpollEvent) (int, error) {
	if !l.raw {
		return unix.EpollWait(l.epfd, events, -1)
	}
	n, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), ^uintptr(0), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func (l *loop) read(fd int, p []byte) (int, error) {
	if !l.raw {
		return unix.Read(fd, p)
	}
	n, _, e := syscall.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func (l *loop) write(fd int, p []byte) (int, error) {
	if !l.raw {
		return unix.Write(fd, p)
	}
	n, _, e := syscall.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
