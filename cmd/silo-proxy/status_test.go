package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/silo-proxy/silo-proxy/spawner"
)

func TestStatusTable(t *testing.T) {
	t.Parallel()
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	silos := []spawner.Status{
		{Name: "default", Databases: []string{"*"}, State: spawner.StateRunning, Pid: 4242, Clients: 3, StartedAt: started, Restarts: 1},
		{Name: "sales", Databases: []string{"sales", "sales_archive"}, State: spawner.StateStopped},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/silos" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(silos)
	}))
	defer srv.Close()

	var out, errOut bytes.Buffer
	addr := strings.TrimPrefix(srv.URL, "http://")
	if code := cmdStatus([]string{"--admin", addr}, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out.String())
	}
	header := strings.Fields(lines[0])
	if strings.Join(header, " ") != "NAME STATE PID CLIENTS RESTARTS STARTED DATABASES" {
		t.Fatalf("header %q", lines[0])
	}
	// Columns are aligned: every row's STATE starts where the header's does.
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "running") && !strings.HasPrefix(l[col:], "stopped") {
			t.Fatalf("misaligned row %q", l)
		}
	}
	for _, want := range []string{"4242", "default", "sales,sales_archive", started.Local().Format("2006-01-02 15:04:05")} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, out.String())
		}
	}
	if f := strings.Fields(lines[2]); f[2] != "-" {
		t.Fatalf("stopped silo pid column %q", f[2])
	}
}

func TestStatusUnreachable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close() // nothing listens there now
	var out, errOut bytes.Buffer
	if code := cmdStatus([]string{"--admin", addr}, &out, &errOut); code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	if !strings.Contains(errOut.String(), "unreachable") {
		t.Fatalf("stderr %q does not say the endpoint is unreachable", errOut.String())
	}
}

func TestStatusUsage(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := cmdStatus([]string{"--admin", "a:1", "--config", "x"}, &out, &errOut); code != exitUsage {
		t.Fatalf("exit %d, want usage", code)
	}
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"--config"}, {"--config", "x", "extra"}, {"--config", "x", "--log-level", "loud"}, {"--config", "x", "--log-format", "xml"}} {
		var out, errOut bytes.Buffer
		if code := cmdRun(args, &out, &errOut); code != exitUsage {
			t.Fatalf("run %q: exit %d, want usage", args, code)
		}
	}
}

func TestRunInvalidConfig(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := cmdRun([]string{"--config", "/nonexistent/silo-proxy.yaml"}, &out, &errOut); code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	if !strings.Contains(errOut.String(), "nonexistent") {
		t.Fatalf("stderr %q does not name the file", errOut.String())
	}
}

// TestRunRelayEnv checks that an unknown SILO_PROXY_RELAY is a usage
// error naming the variable, before any configuration is read.
func TestRunRelayEnv(t *testing.T) {
	t.Setenv(relayEnv, "splice")
	var out, errOut bytes.Buffer
	if code := cmdRun([]string{"--config", "/nonexistent/silo-proxy.yaml"}, &out, &errOut); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if !strings.Contains(errOut.String(), relayEnv) || !strings.Contains(errOut.String(), `"splice"`) {
		t.Fatalf("stderr %q does not name the variable and value", errOut.String())
	}
}
