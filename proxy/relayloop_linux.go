package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// A relay loop relays plaintext sessions (TCP or Unix client, Unix
// postmaster socket) from the moment the startup packet has been
// forwarded, the way PgBouncer does: one goroutine waits on a
// level-triggered epoll set holding both descriptors of each of its
// sessions, reads whatever a readable side has into the loop's one buffer
// and writes it straight to the other side.
//
// Why not two io.Copy goroutines per session: a PostgreSQL round trip is
// two small messages, and with goroutines each of them costs a wake-up of
// a parked goroutine through the Go poller (netpoll, runqueue, a context
// switch) on top of the read and the write; on a 2-core machine shared
// with the clients and the backends that doubles the proxy's CPU per
// query. Splice does not help there either: it moves each message through
// a pipe with two system calls instead of one copy, and its pipes cost a
// session two more descriptors. Here a round trip costs a read and a write
// per direction plus a share of one epoll_wait, and an idle session holds
// its two descriptors and no buffer.
//
// The descriptors are duplicated from the net.Conns, which are then
// closed, so they leave the Go poller and the loop owns them alone. Only a
// short write (the peer's socket buffer is full) copies the rest into a
// buffer of the session's own and pauses reading that side until the peer
// drains. The postmaster's bytes go through the backendScanner until the
// first ReadyForQuery, so the session's BackendKeyData still reaches the
// cancel map. Bytes are counted from the read system calls' results.
//
// TLS sessions keep the goroutine relay (crypto/tls needs its own reads
// and writes), as do all sessions with Options.Relay RelayGoroutines.

// loopBufferSize is the loop's read buffer, shared by its sessions: one
// read moves up to this much, as a large COPY or result set streams.
const loopBufferSize = 64 << 10

// loopSide is one descriptor of a session in a loop.
type loopSide struct {
	fd      int
	peer    *loopSide
	sess    *loopSession
	fromSrv bool
	// pending holds bytes read from this side that the peer has not
	// accepted yet; this side is not read while it is non-nil.
	pending []byte
	eof     bool // this side's read returned 0
	parked  bool // out of the epoll set after a hang-up (see handle)
	mask    uint32
}

// loopSession is a session relayed by a loop.
type loopSession struct {
	client, server loopSide
	done           chan struct{}
	c2s, s2c       int64
	err            error
	scan           backendScanner
	ready          bool // the first ReadyForQuery went by
	onKey          func([]byte)
	up, down       prometheus.Counter // may be nil
	lingerFor      time.Duration
	linger         *time.Timer

	// mu orders abort against the loop closing the descriptors, so that
	// abort never acts on a descriptor number already reused.
	mu     sync.Mutex
	closed bool
}

// abort ends the session from outside the loop: both sockets are shut
// down, and the loop sees their hang-up and closes them.
func (ls *loopSession) abort() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return
	}
	unix.Shutdown(ls.client.fd, unix.SHUT_RDWR)
	unix.Shutdown(ls.server.fd, unix.SHUT_RDWR)
}

// relayLoop is one epoll set and the goroutine that serves it.
type relayLoop struct {
	epfd   int
	wakefd int // eventfd: new sessions are queued

	mu    sync.Mutex
	queue []*loopSession

	// Owned by the loop goroutine.
	idle    bool // no events for busyWait: block in an ordinary system call
	singleP bool // GOMAXPROCS is 1: never block in a raw system call
	sides   map[int32]*loopSide
	buf     []byte
	events  []unix.EpollEvent
}

// loopStalls counts short writes, after which a side waits for its peer
// to drain; tests check that the path ran.
var loopStalls atomic.Int64

var (
	loopsOnce sync.Once
	loops     []*relayLoop
	loopsErr  error
	loopNext  atomic.Uint32
)

// startLoops creates the relay loops on first use: one per four Ps. On a
// 2-core machine one loop leaves a core to the backends and the clients;
// there it relayed 23–34k pgbench transactions a second with CPU to spare
// (bench/README.md).
func startLoops() ([]*relayLoop, error) {
	loopsOnce.Do(func() {
		n := max(1, runtime.GOMAXPROCS(0)/4)
		for range n {
			l, err := newRelayLoop()
			if err != nil {
				loopsErr = err
				for _, l := range loops {
					l.closeFDs()
				}
				loops = nil
				return
			}
			loops = append(loops, l)
		}
		for _, l := range loops {
			go l.run()
		}
	})
	return loops, loopsErr
}

func newRelayLoop() (*relayLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	l := &relayLoop{
		epfd:    epfd,
		wakefd:  wakefd,
		sides:   make(map[int32]*loopSide),
		buf:     make([]byte, loopBufferSize),
		events:  make([]unix.EpollEvent, 128),
		singleP: runtime.GOMAXPROCS(0) == 1,
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		l.closeFDs()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return l, nil
}

func (l *relayLoop) closeFDs() {
	unix.Close(l.epfd)
	unix.Close(l.wakefd)
}

// loopRelay relays the session on a relay loop when its client connection
// is plaintext; ok is false when the session must use the goroutine relay
// (TLS, or no loop could be created).
func (ss *session) loopRelay() (c2s, s2c int64, ok bool, err error) {
	switch ss.client.(type) {
	case *net.TCPConn, *net.UnixConn:
	default: // *tls.Conn
		return 0, 0, false, nil
	}
	ls, err := startLoops()
	if len(ls) == 0 {
		ss.log.get().Warn("relay loop unavailable; relaying with goroutines", "err", err)
		return 0, 0, false, nil
	}
	l := ls[int(loopNext.Add(1))%len(ls)]
	c2s, s2c, err = l.relay(ss.client, ss.server, loopHooks{
		onKey: func(k []byte) {
			ss.key = append([]byte(nil), k...)
			ss.srv.cancels.add(ss.key, ss.target)
		},
		handOff: func(abort func()) { ss.srv.handOff(ss.client, abort) },
		linger:  ss.srv.opts.ServerEOFLinger,
		up:      ss.up,
		down:    ss.down,
	})
	return c2s, s2c, true, err
}

// loopHooks connect a loop session to its surroundings.
type loopHooks struct {
	// onKey receives the session's BackendKeyData, on the loop's
	// goroutine.
	onKey func([]byte)
	// handOff receives the function that ends the session, once the
	// loop's duplicates carry it and before the net.Conns close.
	handOff func(abort func())
	// linger is how long the client may keep its side open after the
	// postmaster closed the session.
	linger time.Duration
	// up and down, when set, count the bytes read from the client and
	// from the postmaster as they are read, so that the byte counters of
	// long sessions move while they last.
	up, down prometheus.Counter
}

// relay relays client and server (a *net.TCPConn or *net.UnixConn and
// the postmaster's *net.UnixConn) until both streams ended or the session
// failed, and returns the bytes read from each. client and server are
// closed when it returns.
func (l *relayLoop) relay(client, server net.Conn, h loopHooks) (c2s, s2c int64, err error) {
	cfd, err := dupConn(client)
	if err != nil {
		closeConns(client, server)
		return 0, 0, err
	}
	sfd, err := dupConn(server)
	if err != nil {
		unix.Close(cfd)
		closeConns(client, server)
		return 0, 0, err
	}
	sess := &loopSession{done: make(chan struct{}), onKey: h.onKey, lingerFor: h.linger, up: h.up, down: h.down}
	sess.client = loopSide{fd: cfd, sess: sess, peer: &sess.server}
	sess.server = loopSide{fd: sfd, sess: sess, peer: &sess.client, fromSrv: true}
	// From here the duplicates carry the session: Shutdown reaches it
	// through abort, and the net.Conns close so that the Go poller lets go
	// of the sockets.
	if h.handOff != nil {
		h.handOff(sess.abort)
	}
	closeConns(client, server)

	l.mu.Lock()
	l.queue = append(l.queue, sess)
	l.mu.Unlock()
	one := [8]byte{7: 1}
	if _, err := unix.Write(l.wakefd, one[:]); err != nil && err != unix.EAGAIN {
		// The counter cannot reach its maximum; a failure would leave
		// the session unserved.
		panic("relay loop: eventfd write: " + err.Error())
	}
	<-sess.done
	if sess.linger != nil {
		sess.linger.Stop()
	}
	return sess.c2s, sess.s2c, sess.err
}

func closeConns(cs ...net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// dupConn returns a close-on-exec duplicate of c's descriptor, which stays
// non-blocking (the flag belongs to the shared open file).
func dupConn(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("relay loop: %T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	return fd, nil
}

// run serves the loop forever: loops live as long as the process.
//
// The goroutine keeps its OS thread, as PgBouncer's loop is one thread:
// the kernel then wakes the same task every time and places it by its own
// history (wake-affine) next to the client and the backend it relays,
// where a goroutine that moves between threads after each preemption
// starts over on a thread the scheduler knows nothing of.
func (l *relayLoop) run() {
	runtime.LockOSThread()
	for {
		n, err := l.wait()
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic("relay loop: epoll_wait: " + err.Error())
		}
		admit := false
		for i := range n {
			ev := l.events[i]
			if ev.Fd == int32(l.wakefd) {
				admit = true
				continue
			}
			s := l.sides[ev.Fd]
			if s == nil {
				continue // closed by an earlier event of this batch
			}
			l.handle(s, ev.Events)
		}
		// New sessions join after the batch: one may have a descriptor
		// number that a session closed in this batch had, and a later
		// event of the batch, meant for the old one, must not reach it.
		if admit {
			l.admit()
		}
	}
}

// wait returns the next ready events.
//
// While sessions are busy it waits in a raw system call, with a short
// timeout: the loop's P then stays with the loop instead of being marked
// as in a system call, which sysmon would take away and hand to another
// thread (a futex wake-up and a context switch, and sysmon itself polling
// every 20 µs), the cost the goroutine relay pays per message. A raw wait
// does keep the P, so it is interrupted by the runtime's preemption signal
// (EINTR, then Gosched lets a garbage collection or another goroutine
// have it) and ends after busyWait without events; the loop then counts as
// idle and blocks in an ordinary system call, which hands the P back, until
// the next event. With a single P, which a raw wait would take from every
// other goroutine, only a non-blocking raw poll precedes the ordinary wait.
func (l *relayLoop) wait() (int, error) {
	if !l.idle {
		timeout := busyWait
		if l.singleP {
			timeout = 0
		}
		r, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd),
			uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), uintptr(timeout), 0, 0)
		switch {
		case e == unix.EINTR:
			runtime.Gosched()
			return 0, nil
		case e != 0:
			return 0, e
		case r > 0:
			return int(r), nil
		}
		l.idle = true
	}
	n, err := unix.EpollWait(l.epfd, l.events, -1)
	if n > 0 {
		l.idle = false
	}
	return n, err
}

// busyWait is how long, in milliseconds, a busy loop waits for events
// while keeping its P (see wait).
const busyWait = 2

// admit registers queued sessions.
func (l *relayLoop) admit() {
	var b [8]byte
	unix.Read(l.wakefd, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, sess := range q {
		if err := l.add(&sess.client); err != nil {
			l.closeSession(sess, err)
			continue
		}
		if err := l.add(&sess.server); err != nil {
			l.closeSession(sess, err)
		}
	}
}

func (l *relayLoop) add(s *loopSide) error {
	s.mask = unix.EPOLLIN | unix.EPOLLRDHUP
	ev := unix.EpollEvent{Events: s.mask, Fd: int32(s.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.sides[int32(s.fd)] = s
	return nil
}

// handle acts on the events of one side.
func (l *relayLoop) handle(s *loopSide, ev uint32) {
	sess := s.sess
	if ev&unix.EPOLLERR != 0 {
		l.closeSession(sess, sockError(s.fd))
		return
	}
	if ev&unix.EPOLLOUT != 0 && s.peer.pending != nil {
		if !l.flush(s.peer) {
			return
		}
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) == 0 {
		return
	}
	switch {
	case !s.eof && s.pending == nil:
		l.readFrom(s)
	case ev&unix.EPOLLHUP == 0:
	case s.eof && !s.fromSrv:
		// The client ended its stream and can no longer be written to:
		// nothing more can move.
		l.closeSession(sess, nil)
	default:
		// A hang-up, which epoll reports whatever the mask, of a side
		// that is not read: a stalled side whose unread bytes still go
		// out once its peer drains, or the postmaster's ended side while
		// the client lingers. Level-triggered, it would be reported on
		// every wait, so the side leaves the set until update re-adds it.
		l.park(s)
	}
}

// park takes s out of the epoll set (see handle).
func (l *relayLoop) park(s *loopSide) {
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil); err != nil {
		l.closeSession(s.sess, os.NewSyscallError("epoll_ctl", err))
		return
	}
	s.parked, s.mask = true, 0
}

// readFrom reads what s has and passes it to its peer.
func (l *relayLoop) readFrom(s *loopSide) {
	sess := s.sess
	n, err := rawRead(s.fd, l.buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		l.closeSession(sess, err)
		return
	case n == 0:
		l.sawEOF(s)
		return
	}
	p := l.buf[:n]
	if s.fromSrv {
		sess.s2c += int64(n)
		if sess.down != nil {
			sess.down.Add(float64(n))
		}
		if !sess.ready {
			end, serr := sess.scan.scan(p)
			if k := sess.scan.cancelKey(); k != nil && sess.onKey != nil {
				sess.onKey(k)
				sess.onKey = nil
			}
			if serr != nil {
				// The stream cannot be followed; pass on what was
				// read, as the goroutine relay does, then end.
				rawSend(s.peer.fd, p)
				l.closeSession(sess, serr)
				return
			}
			sess.ready = end >= 0
		}
	} else {
		sess.c2s += int64(n)
		if sess.up != nil {
			sess.up.Add(float64(n))
		}
	}
	w, err := rawSend(s.peer.fd, p)
	if err != nil && err != unix.EAGAIN {
		l.closeSession(sess, err)
		return
	}
	if w < n {
		loopStalls.Add(1)
		s.pending = append([]byte(nil), p[max(w, 0):]...)
		l.update(s)
		l.update(s.peer)
	}
}

// flush writes s's pending bytes to its peer; false when the session
// ended.
func (l *relayLoop) flush(s *loopSide) bool {
	w, err := rawSend(s.peer.fd, s.pending)
	if err != nil && err != unix.EAGAIN {
		l.closeSession(s.sess, err)
		return false
	}
	if w > 0 {
		s.pending = s.pending[w:]
	}
	if len(s.pending) == 0 {
		s.pending = nil
		l.update(s)
		l.update(s.peer)
	}
	return true
}

// sawEOF handles the end of s's stream: it is passed on as a half-close
// of the peer, and the session ends once both streams ended. When the
// postmaster ends first, the client may still read what was sent but
// cannot send anything more; it is cut off after serverEOFLinger.
func (l *relayLoop) sawEOF(s *loopSide) {
	s.eof = true
	if s.peer.eof {
		l.closeSession(s.sess, nil)
		return
	}
	unix.Shutdown(s.peer.fd, unix.SHUT_WR)
	l.update(s)
	if s.fromSrv && s.sess.linger == nil {
		s.sess.linger = time.AfterFunc(s.sess.lingerFor, s.sess.abort)
	}
}

// update sets s's epoll mask from its state: readable while it is read,
// writable while its peer has bytes waiting for it.
func (l *relayLoop) update(s *loopSide) {
	var m uint32
	if !s.eof && s.pending == nil {
		m = unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if s.peer.pending != nil {
		m |= unix.EPOLLOUT
	}
	op := unix.EPOLL_CTL_MOD
	if s.parked {
		// A hung-up side can only be read: it returns once its
		// pending bytes went out.
		if m&unix.EPOLLIN == 0 {
			return
		}
		op, s.parked = unix.EPOLL_CTL_ADD, false
	} else if m == s.mask {
		return
	}
	s.mask = m
	ev := unix.EpollEvent{Events: m, Fd: int32(s.fd)}
	if err := unix.EpollCtl(l.epfd, op, s.fd, &ev); err != nil {
		l.closeSession(s.sess, os.NewSyscallError("epoll_ctl", err))
	}
}

// closeSession closes both descriptors and wakes the session's goroutine.
// It may run more than once for a session; only the first acts.
func (l *relayLoop) closeSession(sess *loopSession, err error) {
	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		return
	}
	sess.closed = true
	for _, s := range []*loopSide{&sess.client, &sess.server} {
		if l.sides[int32(s.fd)] == s {
			delete(l.sides, int32(s.fd))
			if !s.parked {
				unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
			}
		}
		unix.Close(s.fd)
	}
	sess.mu.Unlock()
	if err != nil && !errors.Is(err, unix.ECONNRESET) && !errors.Is(err, unix.EPIPE) {
		sess.err = &net.OpError{Op: "relay", Net: "loop", Err: err}
	}
	close(sess.done)
}

// sockError returns a socket's pending error (SO_ERROR).
func sockError(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if v == 0 {
		return nil
	}
	return syscall.Errno(v)
}

// rawRead and rawSend are read(2) and send(2) without the scheduler's
// system-call bookkeeping: the sockets are non-blocking, so the calls
// return at once. send uses MSG_NOSIGNAL, so a closed peer is EPIPE, never
// SIGPIPE.
func rawRead(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawSend(fd int, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
