package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// errTLSRefused ends a connection whose TLS could not be set up; nothing is
// sent, as the client speaks TLS and would not understand a plain message.
var errTLSRefused = errors.New("tls refused")

// serveConn runs one client connection from accept to close.
func (s *Server) serveConn(raw net.Conn) {
	defer s.sessions.Done()
	defer s.untrack(raw)
	defer raw.Close()
	log := &connLog{base: s.log, id: s.nextID.Add(1), conn: raw}

	// The login deadline covers the startup packet and the TLS handshake:
	// a client that trickles bytes (slowloris) is cut off after it.
	raw.SetDeadline(time.Now().Add(s.opts.LoginTimeout))
	conn, st, err := s.negotiate(raw)
	if err != nil {
		s.startupFailed(conn, log, err)
		return
	}
	if st.Kind == KindCancelRequest {
		s.forwardCancel(st, log)
		return
	}
	log.db = st.Database

	rt := s.routes.Load()
	_, tlsOn := conn.(*tls.Conn)
	if !tlsOn && rt.cfg.TLS.Mode == config.TLSRequire {
		s.reject(conn, log, "", resultProtocolError,
			protocolViolation("SSL/TLS is required: connect with sslmode=require"))
		return
	}
	silo, ok := rt.route(st.Database)
	if !ok {
		s.reject(conn, log, "", resultUnknownDatabase, &ClientError{
			SQLState: SQLStateInvalidCatalogName,
			Message:  fmt.Sprintf("database %q does not exist", st.Database),
		})
		return
	}
	log.silo = silo
	conn.SetDeadline(time.Time{})

	begin := time.Now()
	lease, err := s.silos.Acquire(s.baseCtx, silo)
	if err != nil {
		label, ce := acquireError(err, st.Database)
		if label == resultUnknownDatabase {
			silo = ""
		}
		ce.Err = err
		s.reject(conn, log, silo, label, ce)
		return
	}
	defer lease.Release()
	server, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: lease.SocketPath, Net: "unix"})
	if err != nil {
		lease.Release()
		s.reject(conn, log, silo, resultUnavailable, &ClientError{
			SQLState: SQLStateCannotConnectNow,
			Message:  "the database system is not accepting connections",
			Err:      err,
		})
		return
	}
	start := "warm"
	if lease.ColdStart {
		start = "cold"
	}
	s.metrics.connectDuration.WithLabelValues(silo, start).Observe(time.Since(begin).Seconds())
	s.metrics.connections.WithLabelValues(silo, resultOK).Inc()
	gauge := s.metrics.clientConnections.WithLabelValues(silo)
	gauge.Inc()
	defer gauge.Dec()

	sess := &session{
		srv:    s,
		log:    log,
		client: conn,
		server: server,
		target: cancelTarget{silo: silo, socketPath: lease.SocketPath},
		up:     s.metrics.relayBytes.WithLabelValues(silo, dirClientToServer),
		down:   s.metrics.relayBytes.WithLabelValues(silo, dirServerToClient),
	}
	c2s, s2c, err := sess.run(st.Raw)
	if log.enabled(slog.LevelDebug) {
		log.get().Debug("session ended", "client_to_server", c2s, "server_to_client", s2c, "err", err)
	}
}

// acquireError maps a Silos.Acquire failure to the client's SQLSTATE and
// the connections_total result.
func acquireError(err error, db string) (string, *ClientError) {
	switch {
	case errors.Is(err, spawner.ErrUnknownSilo):
		// The silo left the config between routing and acquiring.
		return resultUnknownDatabase, &ClientError{
			SQLState: SQLStateInvalidCatalogName,
			Message:  fmt.Sprintf("database %q does not exist", db),
		}
	case errors.Is(err, spawner.ErrTooManyClients):
		return resultTooManyClients, &ClientError{
			SQLState: SQLStateTooManyConnections,
			Message:  "sorry, too many clients already",
		}
	case errors.Is(err, spawner.ErrDraining):
		return resultUnavailable, &ClientError{
			SQLState: SQLStateCannotConnectNow,
			Message:  "the database system is shutting down",
		}
	}
	return resultUnavailable, &ClientError{
		SQLState: SQLStateCannotConnectNow,
		Message:  "the database system is not accepting connections",
	}
}

// negotiate reads packets until a StartupMessage or CancelRequest, setting
// up TLS on the way. It returns the connection to continue on, a
// *tls.Conn when TLS was negotiated.
//
// The order of what is allowed mirrors the postmaster's
// ProcessStartupPacket: GSSENCRequest is refused with 'N' once, after which
// the client may still ask for TLS; SSLRequest is answered once, and after
// it (accepted or refused) neither request may come again. Direct TLS is
// recognised only as the very first bytes.
func (s *Server) negotiate(raw net.Conn) (net.Conn, *Startup, error) {
	conn := raw
	st := &Startup{}
	sslDone, gssDone := false, false
	for first := true; ; first = false {
		if err := ReadStartup(conn, st); err != nil {
			return conn, nil, err
		}
		switch st.Kind {
		case KindStartupMessage, KindCancelRequest:
			return conn, st, nil
		case KindDirectTLS:
			if !first || !s.tlsEnabled() {
				return conn, nil, fmt.Errorf("%w: direct TLS without TLS configured", errTLSRefused)
			}
			tc, err := s.handshake(&prefixConn{Conn: raw, prefix: append([]byte(nil), st.Raw...)})
			if err != nil {
				return conn, nil, err
			}
			if tc.ConnectionState().NegotiatedProtocol != alpnPostgreSQL {
				return conn, nil, fmt.Errorf("%w: direct TLS without ALPN %q", errTLSRefused, alpnPostgreSQL)
			}
			conn, sslDone, gssDone = tc, true, true
		case KindSSLRequest:
			if sslDone {
				return conn, nil, protocolViolation("unexpected SSLRequest after SSL negotiation")
			}
			sslDone, gssDone = true, true
			if !s.tlsEnabled() {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return conn, nil, err
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return conn, nil, err
			}
			// Bytes the client sent after the SSLRequest and before its
			// ClientHello would be read by the handshake and fail it, so
			// no unencrypted data can be injected into the session
			// (CVE-2021-23214).
			tc, err := s.handshake(conn)
			if err != nil {
				return conn, nil, err
			}
			conn = tc
		case KindGSSENCRequest:
			if gssDone {
				return conn, nil, protocolViolation("unexpected GSSENCRequest after encryption negotiation")
			}
			gssDone = true
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return conn, nil, err
			}
		default:
			panic("BUG: ReadStartup returned packet kind " + st.Kind.String())
		}
	}
}

func (s *Server) tlsEnabled() bool {
	m := s.routes.Load().cfg.TLS.Mode
	return (m == config.TLSAllow || m == config.TLSRequire) && s.certs.cert.Load() != nil
}

// handshake runs the server side of a TLS handshake on c, within the
// login deadline already set on the connection.
func (s *Server) handshake(c net.Conn) (*tls.Conn, error) {
	tc := tls.Server(c, s.certs.serverConfig())
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("%w: handshake: %w", errTLSRefused, err)
	}
	return tc, nil
}

// startupFailed ends a connection whose startup phase failed: a client
// error is answered with its FATAL ErrorResponse; a timeout gets 08P01; a
// connection that closed before sending anything is not counted.
func (s *Server) startupFailed(conn net.Conn, log *connLog, err error) {
	var ce *ClientError
	switch {
	case errors.Is(err, io.EOF):
		log.get().Debug("client closed before a startup packet")
	case errors.Is(err, errTLSRefused):
		s.metrics.connections.WithLabelValues("", resultTLSError).Inc()
		log.get().Info("TLS negotiation failed", "err", err)
	case errors.As(err, &ce):
		s.reject(conn, log, "", resultProtocolError, ce)
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.reject(conn, log, "", resultProtocolError, &ClientError{
			SQLState: SQLStateProtocolViolation,
			Message:  "incomplete startup packet: login timeout expired",
			Err:      err,
		})
	default:
		s.metrics.connections.WithLabelValues("", resultProtocolError).Inc()
		log.get().Debug("startup failed", "err", err)
	}
}

// reject sends ce as a FATAL ErrorResponse and counts the connection under
// silo and result. The connection is then half-closed and drained for a
// moment, so that input the client already sent does not turn the close
// into a reset that could destroy the error before it is read.
func (s *Server) reject(conn net.Conn, log *connLog, silo, result string, ce *ClientError) {
	s.metrics.connections.WithLabelValues(silo, result).Inc()
	log.get().Info("connection rejected", "sqlstate", ce.SQLState, "msg", ce.Message, "err", ce.Err)
	buf := ce.AppendErrorResponse(make([]byte, 0, 128))
	conn.SetDeadline(time.Now().Add(errorLinger))
	if _, err := conn.Write(buf); err != nil {
		return
	}
	closeWrite(conn)
	var sink [512]byte
	for range 32 {
		if _, err := conn.Read(sink[:]); err != nil {
			return
		}
	}
}

// forwardCancel passes a CancelRequest on to the postmaster of the session
// whose BackendKeyData carried the same key, then waits for that
// postmaster to close the cancel connection (it has signalled the backend
// by then) before the caller closes the client's. Unknown keys are dropped
// without an answer, as PostgreSQL does.
func (s *Server) forwardCancel(st *Startup, log *connLog) {
	targets := s.cancels.lookup(st.CancelKey())
	if len(targets) == 0 {
		s.metrics.cancelRequests.WithLabelValues("unknown_key").Inc()
		log.get().Debug("cancel request with unknown key dropped")
		return
	}
	s.metrics.cancelRequests.WithLabelValues("forwarded").Inc()
	for _, t := range targets {
		if err := sendCancel(t.socketPath, st.Raw); err != nil {
			log.get().Warn("forwarding cancel request failed", "silo", t.silo, "err", err)
			continue
		}
		log.get().Debug("cancel request forwarded", "silo", t.silo)
	}
}

func sendCancel(socketPath string, packet []byte) error {
	c, err := net.DialTimeout("unix", socketPath, cancelTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(cancelTimeout))
	if _, err := c.Write(packet); err != nil {
		return err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// session is one routed client session with a connection to its
// postmaster.
type session struct {
	srv    *Server
	log    *connLog
	client net.Conn // *net.TCPConn, *net.UnixConn or *tls.Conn
	server *net.UnixConn
	target cancelTarget
	key    []byte // BackendKeyData payload, once seen
	// up and down count the bytes relayed each way: as they move with
	// the relay loop, when the session ends with the goroutine relay.
	up, down prometheus.Counter
}

// run relays the session until both directions ended and returns the
// bytes relayed each way, which it has counted in up and down.
//
// Client-to-server bytes are copied raw from the first moment: they are
// authentication messages and possibly a pipelined query, and nothing in
// them concerns the proxy. Server-to-client bytes are scanned until the
// first ReadyForQuery to record the session's BackendKeyData for cancel
// routing; from then on both directions are raw copies.
func (ss *session) run(startup []byte) (c2s, s2c int64, err error) {
	defer ss.server.Close()
	defer func() {
		if ss.key != nil {
			ss.srv.cancels.remove(ss.key, ss.target)
		}
	}()
	if _, err := ss.server.Write(startup); err != nil {
		return 0, 0, fmt.Errorf("sending startup packet to postmaster: %w", err)
	}
	if ss.srv.opts.Relay == RelayLoop {
		if c2s, s2c, ok, err := ss.loopRelay(); ok {
			return c2s, s2c, err
		}
	}
	defer func() {
		ss.up.Add(float64(c2s))
		ss.down.Add(float64(s2c))
	}()

	up := &copier{dst: ss.server, src: ss.client}
	var upBuf, downBuf *[]byte
	if !splices(ss.client) {
		upBuf = getBuffer()
		defer putBuffer(upBuf)
		up.buf = *upBuf
	}
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		up.run()
	}()

	// The startup phase reads through a pooled buffer. A spliced session
	// gives it back at once: an idle session then holds no copy buffer,
	// only its two goroutines.
	downBuf = getBuffer()
	s2c, err = ss.startupPhase(*downBuf)
	if splices(ss.client) {
		putBuffer(downBuf)
	} else {
		defer putBuffer(downBuf)
	}
	if err == nil {
		down := &copier{dst: ss.client, src: ss.server}
		if !splices(ss.client) {
			down.buf = *downBuf
		}
		down.run()
		s2c += down.n
		err = down.err
	} else if errors.Is(err, io.EOF) {
		closeWrite(ss.client)
		err = nil
	} else {
		ss.client.Close()
		ss.server.Close()
	}
	if err == nil {
		// The postmaster closed the session; the client cannot send it
		// anything more. Let it read what was sent, then cut it off.
		ss.client.SetReadDeadline(time.Now().Add(ss.srv.opts.ServerEOFLinger))
	}
	<-upDone
	ss.client.Close()
	c2s = up.n
	return c2s, s2c, errors.Join(err, up.err)
}

// startupPhase forwards the postmaster's messages until the first
// ReadyForQuery, registering the BackendKeyData it sees. It returns the
// bytes forwarded, and io.EOF when the postmaster closed first (a failed
// authentication, for one).
func (ss *session) startupPhase(buf []byte) (int64, error) {
	var sc backendScanner
	var total int64
	for {
		n, rerr := ss.server.Read(buf)
		if n > 0 {
			end, serr := sc.scan(buf[:n])
			if _, werr := ss.client.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			if serr != nil {
				return total, serr
			}
			if ss.key == nil && sc.cancelKey() != nil {
				ss.key = append([]byte(nil), sc.cancelKey()...)
				ss.srv.cancels.add(ss.key, ss.target)
			}
			if end >= 0 {
				return total, nil
			}
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

func remoteString(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "unix"
}

// connLog is a connection's scoped logger, built only when something is
// logged: slog.Logger.With copies its attributes, which would cost every
// session several allocations for records that are usually disabled.
type connLog struct {
	base     *slog.Logger
	id       uint64
	conn     net.Conn
	db, silo string
	cached   *slog.Logger
	cachedAt [2]string // db and silo the cached logger carries
}

func (l *connLog) enabled(level slog.Level) bool {
	return l.base.Enabled(context.Background(), level)
}

// get returns the logger scoped with conn, remote, and db and silo once
// they are known.
func (l *connLog) get() *slog.Logger {
	if l.cached != nil && l.cachedAt == [2]string{l.db, l.silo} {
		return l.cached
	}
	args := []any{"conn", l.id, "remote", remoteString(l.conn)}
	if l.db != "" {
		args = append(args, "db", l.db)
	}
	if l.silo != "" {
		args = append(args, "silo", l.silo)
	}
	l.cached, l.cachedAt = l.base.With(args...), [2]string{l.db, l.silo}
	return l.cached
}
