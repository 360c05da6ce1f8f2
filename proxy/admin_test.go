package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/silo-proxy/silo-proxy/spawner"
)

func newAdminServer(t *testing.T) (*Server, *fakeSilos, http.Handler) {
	t.Helper()
	fs := newFakeSilos(map[string]string{"a": "/nonexistent/a", "b": "/nonexistent/b"})
	srv, err := New(testConfig(t, false), fs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return srv, fs, srv.adminHandler()
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	srv, fs, h := newAdminServer(t)
	srv.serving.Store(true)
	tests := []struct {
		name   string
		method string
		path   string
		header map[string]string
		ready  bool
		code   int
		body   string
	}{
		{name: "healthz", method: "GET", path: "/healthz", code: 200},
		{name: "readyz before listeners", method: "GET", path: "/readyz", code: 503},
		{name: "readyz when ready", method: "GET", path: "/readyz", ready: true, code: 200},
		{name: "silos", method: "GET", path: "/silos", code: 200, body: `"name": "a"`},
		{name: "start", method: "POST", path: "/silos/a/start", code: 200, body: `"ok": true`},
		{name: "stop", method: "POST", path: "/silos/b/stop", code: 200, body: `"action": "stop"`},
		{name: "restart", method: "POST", path: "/silos/a/restart", code: 200},
		{name: "unknown silo", method: "POST", path: "/silos/zzz/start", code: 404, body: "unknown silo"},
		{name: "unknown action", method: "POST", path: "/silos/a/explode", code: 404},
		{name: "wrong method on action", method: "GET", path: "/silos/a/start", code: 405},
		{name: "wrong method on silos", method: "POST", path: "/silos", code: 405},
		{name: "cross-site browser POST", method: "POST", path: "/silos/a/stop",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}, code: 403},
		{name: "foreign Origin", method: "POST", path: "/silos/a/stop",
			header: map[string]string{"Origin": "http://evil.example"}, code: 403},
		{name: "rebound host name", method: "POST", path: "/silos/a/stop",
			header: map[string]string{"Host": "evil.example:9432"}, code: 403},
		{name: "localhost host", method: "POST", path: "/silos/a/stop",
			header: map[string]string{"Host": "localhost:9432"}, code: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.ready.Store(tt.ready)
			req := httptest.NewRequest(tt.method, "http://127.0.0.1:9432"+tt.path, nil)
			for k, v := range tt.header {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.body) {
				t.Fatalf("%s %s: %d %q, want %d containing %q", tt.method, tt.path, rec.Code, rec.Body.String(), tt.code, tt.body)
			}
		})
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	want := "start a,stop-smart b,restart a,stop-smart a"
	if got := strings.Join(fs.actions, ","); got != want {
		t.Fatalf("actions %q, want %q (refused requests must not act)", got, want)
	}
}

func TestAdminSilosJSON(t *testing.T) {
	t.Parallel()
	_, _, h := newAdminServer(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/silos", nil))
	var got []spawner.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("silos %+v", got)
	}
	var raw []map[string]any
	json.Unmarshal(rec.Body.Bytes(), &raw)
	for _, k := range []string{"name", "databases", "state", "pid", "clients", "restarts"} {
		if _, ok := raw[0][k]; !ok {
			t.Fatalf("field %q missing from %v", k, raw[0])
		}
	}
}

// TestMetricsLintAndMove runs traffic through the proxy, then checks that
// /metrics lints clean, that per-silo series moved, and that the usage
// collector reports the spawner's cgroup numbers.
func TestMetricsLintAndMove(t *testing.T) {
	t.Parallel()
	env := startEnv(t, testConfig(t, false), Options{})
	m := env.srv.Metrics()
	env.silos.cold["a"] = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
	if err != nil {
		t.Fatal(err)
	}
	queryText(t, c, "traffic")
	if got := testutil.ToFloat64(m.clientConnections.WithLabelValues("a")); got != 1 {
		t.Fatalf("client_connections{a} = %v during a session", got)
	}
	c.Close(ctx)
	m.StateChanged("a", spawner.StateStarting, spawner.StateRunning)
	m.SiloStarted("a", spawner.StartCold, 1500*time.Millisecond)
	m.SiloExited("b", false)

	resp, err := http.Get("http://" + env.srv.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	problems, err := promlint.New(resp.Body).Lint()
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 0 {
		t.Fatalf("promlint: %+v", problems)
	}
	checks := []struct {
		name string
		want float64
	}{
		{"silo_proxy_connections_total", 1},
		{"silo_proxy_silo_up", 2},
		{"silo_proxy_silo_starts_total", 1},
		{"silo_proxy_silo_exits_total", 1},
		{"silo_proxy_connect_duration_seconds", 1},
		{"silo_proxy_silo_start_duration_seconds", 1},
		{"silo_proxy_silo_memory_bytes", 2},
		{"silo_proxy_silo_cpu_seconds_total", 2},
		{"silo_proxy_silo_pids", 2},
		{"silo_proxy_cancel_requests_total", 2},
		{"silo_proxy_config_reloads_total", 2},
	}
	for _, ck := range checks {
		n, err := testutil.GatherAndCount(m.Registry(), ck.name)
		if err != nil {
			t.Fatal(err)
		}
		if float64(n) != ck.want {
			t.Errorf("%s: %d series, want %v", ck.name, n, ck.want)
		}
	}
	var h dto.Metric
	if err := m.connectDuration.WithLabelValues("a", "cold").(prometheus.Histogram).Write(&h); err != nil {
		t.Fatal(err)
	}
	if got := h.GetHistogram().GetSampleCount(); got != 1 {
		t.Fatalf("connect_duration_seconds{a,cold} count %v", got)
	}
	waitFor(t, "relay bytes", func() bool {
		return testutil.ToFloat64(m.relayBytes.WithLabelValues("a", dirServerToClient)) > 0
	})
	if got := testutil.ToFloat64(m.siloUp.WithLabelValues("a")); got != 1 {
		t.Fatalf("silo_up{a} = %v", got)
	}
	const wantUsage = `
# HELP silo_proxy_silo_pids Tasks in the silo's cgroup.
# TYPE silo_proxy_silo_pids gauge
silo_proxy_silo_pids{silo="a"} 7
silo_proxy_silo_pids{silo="b"} 7
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(wantUsage), "silo_proxy_silo_pids"); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsRemovedSiloDeleted checks that a silo dropped by a reload
// loses its series once it stopped, and not before.
func TestMetricsRemovedSiloDeleted(t *testing.T) {
	t.Parallel()
	m := NewMetrics()
	m.setSilos([]string{"a", "b"}, nil)
	m.connections.WithLabelValues("b", resultOK).Inc()
	m.SiloStarted("b", spawner.StartCold, time.Second)
	m.StateChanged("b", spawner.StateStarting, spawner.StateRunning)

	running := []spawner.Status{{Name: "b", State: spawner.StateDraining}}
	m.setSilos([]string{"a"}, running)
	if n, _ := testutil.GatherAndCount(m.Registry(), "silo_proxy_connections_total"); n != 1 {
		t.Fatalf("series deleted while the silo still drains (%d left)", n)
	}
	m.StateChanged("b", spawner.StateDraining, spawner.StateStopped)
	for _, name := range []string{"silo_proxy_connections_total", "silo_proxy_silo_starts_total", "silo_proxy_silo_up"} {
		n, _ := testutil.GatherAndCount(m.Registry(), name)
		want := 0
		if name == "silo_proxy_silo_up" {
			want = 1 // silo a
		}
		if n != want {
			t.Fatalf("%s: %d series after the removed silo stopped, want %d", name, n, want)
		}
	}
	// A silo that is already stopped when the reload removes it goes at once.
	m.connections.WithLabelValues("a", resultOK).Inc()
	m.setSilos(nil, nil)
	if n, _ := testutil.GatherAndCount(m.Registry(), "silo_proxy_connections_total"); n != 0 {
		t.Fatalf("%d series left for a stopped, removed silo", n)
	}
}
