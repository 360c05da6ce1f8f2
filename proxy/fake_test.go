package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// fakePostmaster speaks enough of the backend protocol to run sessions
// through the proxy without PostgreSQL: trust authentication,
// BackendKeyData, ReadyForQuery, simple queries answered with one row
// holding the query text, "sleep" queries that end when cancelled, and
// CancelRequests matched on the full key.
type fakePostmaster struct {
	t      testing.TB
	ln     *net.UnixListener
	path   string
	keyLen int // secret length announced in BackendKeyData

	mu        sync.Mutex
	nextPid   uint32
	sessions  map[string]chan struct{} // full key -> cancel signal
	startups  [][]byte                 // raw startup packets received
	cancels   int                      // CancelRequests that matched
	badCancel int                      // CancelRequests that did not
	wg        sync.WaitGroup
}

func newFakePostmaster(t testing.TB, keyLen int) *fakePostmaster {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, ".s.PGSQL.5432")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	fp := &fakePostmaster{t: t, ln: ln, path: path, keyLen: keyLen, nextPid: 100, sessions: map[string]chan struct{}{}}
	fp.wg.Add(1)
	go fp.accept()
	t.Cleanup(func() {
		ln.Close()
		fp.wg.Wait()
	})
	return fp
}

func (fp *fakePostmaster) accept() {
	defer fp.wg.Done()
	for {
		c, err := fp.ln.AcceptUnix()
		if err != nil {
			return
		}
		fp.wg.Add(1)
		go func() {
			defer fp.wg.Done()
			defer c.Close()
			fp.serve(c)
		}()
	}
}

func (fp *fakePostmaster) startupPackets() [][]byte {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return append([][]byte(nil), fp.startups...)
}

func (fp *fakePostmaster) cancelCounts() (matched, unmatched int) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.cancels, fp.badCancel
}

func (fp *fakePostmaster) serve(c *net.UnixConn) {
	// Read the startup packet exactly, to record its bytes.
	var hdr [4]byte
	if _, err := readFull(c, hdr[:]); err != nil {
		return
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:])-4)
	if _, err := readFull(c, body); err != nil {
		return
	}
	raw := append(hdr[:], body...)
	if binary.BigEndian.Uint32(body) == cancelRequestCode {
		fp.mu.Lock()
		ch, ok := fp.sessions[string(body[4:])]
		if ok {
			fp.cancels++
			delete(fp.sessions, string(body[4:]))
		} else {
			fp.badCancel++
		}
		fp.mu.Unlock()
		if ok {
			close(ch)
		}
		return
	}
	fp.mu.Lock()
	fp.startups = append(fp.startups, raw)
	fp.nextPid++
	pid := fp.nextPid
	fp.mu.Unlock()

	be := pgproto3.NewBackend(c, c)
	secret := make([]byte, fp.keyLen)
	rand.Read(secret)
	key := binary.BigEndian.AppendUint32(nil, pid)
	key = append(key, secret...)
	cancel := make(chan struct{})
	fp.mu.Lock()
	fp.sessions[string(key)] = cancel
	fp.mu.Unlock()
	defer func() {
		fp.mu.Lock()
		delete(fp.sessions, string(key))
		fp.mu.Unlock()
	}()

	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return
	}
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			if strings.Contains(m.String, "sleep") {
				select {
				case <-cancel:
					be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "57014", Message: "canceling statement due to user request"})
				case <-time.After(30 * time.Second):
					be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
				}
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				if be.Flush() != nil {
					return
				}
				continue
			}
			be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
				Name: []byte("q"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1,
			}}})
			be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(m.String)}})
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		default:
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "0A000", Message: fmt.Sprintf("fake postmaster: unsupported %T", msg)})
			be.Flush()
			return
		}
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// fakeSilos implements Silos over fake postmasters.
type fakeSilos struct {
	mu           sync.Mutex
	sockets      map[string]string // silo -> socket path
	maxClients   int
	clients      map[string]int
	acquireErr   map[string]error
	cold         map[string]bool
	reconfigured []*config.Config
	reconfErr    error
	shutdowns    []spawner.StopMode
	actions      []string
}

func newFakeSilos(sockets map[string]string) *fakeSilos {
	return &fakeSilos{
		sockets:    sockets,
		clients:    map[string]int{},
		acquireErr: map[string]error{},
		cold:       map[string]bool{},
	}
}

func (f *fakeSilos) Acquire(ctx context.Context, silo string) (*spawner.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.acquireErr[silo]; err != nil {
		return nil, fmt.Errorf("silo %s: %w", silo, err)
	}
	path, ok := f.sockets[silo]
	if !ok {
		return nil, fmt.Errorf("silo %s: %w", silo, spawner.ErrUnknownSilo)
	}
	if f.maxClients > 0 && f.clients[silo] >= f.maxClients {
		return nil, fmt.Errorf("silo %s: %w", silo, spawner.ErrTooManyClients)
	}
	f.clients[silo]++
	l := spawner.NewLease(silo, path, func() {
		f.mu.Lock()
		f.clients[silo]--
		f.mu.Unlock()
	})
	l.ColdStart = f.cold[silo]
	f.cold[silo] = false
	return l, nil
}

func (f *fakeSilos) leases(silo string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clients[silo]
}

func (f *fakeSilos) action(a string, silo string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sockets[silo]; !ok {
		return spawner.ErrUnknownSilo
	}
	f.actions = append(f.actions, a+" "+silo)
	return nil
}

func (f *fakeSilos) Start(ctx context.Context, silo string) error { return f.action("start", silo) }
func (f *fakeSilos) Stop(ctx context.Context, silo string, mode spawner.StopMode) error {
	return f.action("stop-"+mode.String(), silo)
}
func (f *fakeSilos) Restart(ctx context.Context, silo string) error { return f.action("restart", silo) }

func (f *fakeSilos) Statuses() []spawner.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []spawner.Status
	for name := range f.sockets {
		out = append(out, spawner.Status{Name: name, Databases: []string{name}, State: spawner.StateRunning, Pid: 42, Clients: f.clients[name]})
	}
	return out
}

func (f *fakeSilos) Usage(silo string) (spawner.Usage, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sockets[silo]; !ok {
		return spawner.Usage{}, false
	}
	return spawner.Usage{MemoryBytes: 1 << 20, CPUSeconds: 1.5, Pids: 7}, true
}

func (f *fakeSilos) Reconfigure(cfg *config.Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reconfErr != nil {
		return f.reconfErr
	}
	f.reconfigured = append(f.reconfigured, cfg)
	return nil
}

func (f *fakeSilos) Shutdown(ctx context.Context, mode spawner.StopMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shutdowns = append(f.shutdowns, mode)
	return nil
}

var _ Silos = (*fakeSilos)(nil)

// testConfig is a two-silo config: "a" serves database a, "b" serves
// database b and is the catch-all unless noCatchAll.
func testConfig(t *testing.T, noCatchAll bool) *config.Config {
	t.Helper()
	dbs := []string{"b", config.CatchAll}
	if noCatchAll {
		dbs = []string{"b"}
	}
	return &config.Config{
		Path:   filepath.Join(t.TempDir(), "silo-proxy.yaml"),
		Listen: config.Listen{Address: "127.0.0.1:0"},
		Admin:  config.Admin{Address: "127.0.0.1:0"},
		TLS:    config.TLS{Mode: config.TLSDisable},
		Silos: []config.Silo{
			{Name: "a", Databases: []string{"a"}},
			{Name: "b", Databases: dbs},
		},
	}
}

// testEnv is a proxy in front of two fake postmasters.
type testEnv struct {
	srv   *Server
	silos *fakeSilos
	pm    map[string]*fakePostmaster
	cfg   *config.Config
}

func startEnv(t *testing.T, cfg *config.Config, opts Options) *testEnv {
	t.Helper()
	pmA, pmB := newFakePostmaster(t, 4), newFakePostmaster(t, 4)
	fs := newFakeSilos(map[string]string{"a": pmA.path, "b": pmB.path})
	srv, err := New(cfg, fs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx, spawner.StopImmediate, 0)
	})
	return &testEnv{srv: srv, silos: fs, pm: map[string]*fakePostmaster{"a": pmA, "b": pmB}, cfg: cfg}
}

// startupPacket encodes a StartupMessage with parameters in order.
func startupPacket(version uint32, params ...string) []byte {
	b := make([]byte, 8, 64)
	binary.BigEndian.PutUint32(b[4:], version)
	for _, p := range params {
		b = append(b, p...)
		b = append(b, 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// readBackend reads backend messages from c until one of type until (or an
// error), returning them.
func readBackend(t *testing.T, c net.Conn, until byte) []pgproto3.BackendMessage {
	t.Helper()
	fe := frontendOf(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var out []pgproto3.BackendMessage
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive after %d messages: %v", len(out), err)
		}
		// Receive reuses message values; keep copies of what tests inspect.
		switch mm := m.(type) {
		case *pgproto3.ErrorResponse:
			cp := *mm
			m = &cp
		case *pgproto3.DataRow:
			vals := make([][]byte, len(mm.Values))
			for i, v := range mm.Values {
				vals[i] = bytes.Clone(v)
			}
			m = &pgproto3.DataRow{Values: vals}
		case *pgproto3.BackendKeyData:
			m = &pgproto3.BackendKeyData{ProcessID: mm.ProcessID, SecretKey: bytes.Clone(mm.SecretKey)}
		}
		out = append(out, m)
		if typeByte(m) == until {
			return out
		}
	}
}

func typeByte(m pgproto3.BackendMessage) byte {
	switch m.(type) {
	case *pgproto3.ReadyForQuery:
		return 'Z'
	case *pgproto3.ErrorResponse:
		return 'E'
	case *pgproto3.BackendKeyData:
		return 'K'
	case *pgproto3.DataRow:
		return 'D'
	case *pgproto3.CommandComplete:
		return 'C'
	}
	return 0
}

// expectFatal reads one ErrorResponse from c and checks it is FATAL with
// the SQLSTATE, then that the connection is closed without ReadyForQuery.
func expectFatal(t *testing.T, c net.Conn, sqlstate string) *pgproto3.ErrorResponse {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	fe := frontendOf(c)
	m, err := fe.Receive()
	if err != nil {
		t.Fatalf("expected ErrorResponse %s, got error %v", sqlstate, err)
	}
	er, ok := m.(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("expected ErrorResponse %s, got %T", sqlstate, m)
	}
	cp := *er
	if cp.Severity != "FATAL" || cp.SeverityUnlocalized != "FATAL" || cp.Code != sqlstate {
		t.Fatalf("got %s/%s %s %q, want FATAL %s", cp.Severity, cp.SeverityUnlocalized, cp.Code, cp.Message, sqlstate)
	}
	if m, err := fe.Receive(); err == nil {
		t.Fatalf("expected the connection closed after the FATAL error, got %T", m)
	}
	return &cp
}

func dialProxy(t *testing.T, srv *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errInjected = errors.New("injected")

// frontends keeps one pgproto3.Frontend per test connection: a Frontend
// buffers what it reads, so a second one on the same connection would miss
// bytes the first already took.
var frontends sync.Map

func frontendOf(c net.Conn) *pgproto3.Frontend {
	fe, _ := frontends.LoadOrStore(c, pgproto3.NewFrontend(c, c))
	return fe.(*pgproto3.Frontend)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// forEachRelay runs f as a parallel subtest once per relay mode, with
// Options selecting it.
func forEachRelay(t *testing.T, f func(t *testing.T, opts Options)) {
	t.Helper()
	for _, m := range []RelayMode{RelayLoop, RelayGoroutines} {
		t.Run("relay="+m.String(), func(t *testing.T) {
			t.Parallel()
			f(t, Options{Relay: m})
		})
	}
}
