package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/silo-proxy/silo-proxy/spawner"
)

// adminActionTimeout bounds POST /silos/{name}/{action}: a smart stop
// waits for the silo's sessions, and a start for its postmaster.
const adminActionTimeout = 2 * time.Minute

// adminHandler serves DESIGN.md §6.
//
// The admin port has no authentication: it is meant to listen on loopback
// or a management network. Two checks keep a browser that visits a hostile
// page from driving it: state-changing requests that a browser marks as
// cross-site (Sec-Fetch-Site, or an Origin that differs from Host) are
// refused by http.CrossOriginProtection, and POSTs must name the server by
// an IP address or "localhost" in Host, which defeats DNS rebinding (a
// rebound name is same-origin to the browser but not an IP literal).
// Command-line clients (curl, silo-proxy status) send neither header and
// connect by address, so they pass.
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !s.serving.Load() {
			http.Error(w, "not serving\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /silos", func(w http.ResponseWriter, r *http.Request) {
		st := s.silos.Statuses()
		if st == nil {
			st = []spawner.Status{}
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /silos/{name}/{action}", s.siloAction)

	cop := http.NewCrossOriginProtection()
	return cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && !hostIsAddress(r.Host) {
			http.Error(w, "admin POST requests must address the server by IP or localhost\n", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

// siloActionResult is the JSON answer of POST /silos/{name}/{action}.
type siloActionResult struct {
	Silo   string `json:"silo"`
	Action string `json:"action"`
	OK     bool   `json:"ok"`
	Error  string `json:"error,omitempty"`
}

func (s *Server) siloAction(w http.ResponseWriter, r *http.Request) {
	name, action := r.PathValue("name"), r.PathValue("action")
	var do func(ctx context.Context) error
	switch action {
	case "start":
		do = func(ctx context.Context) error { return s.silos.Start(ctx, name) }
	case "stop":
		do = func(ctx context.Context) error { return s.silos.Stop(ctx, name, spawner.StopSmart) }
	case "restart":
		do = func(ctx context.Context) error { return s.silos.Restart(ctx, name) }
	default:
		http.NotFound(w, r)
		return
	}
	res := siloActionResult{Silo: name, Action: action}
	if !s.knownSilo(name) {
		res.Error = spawner.ErrUnknownSilo.Error()
		writeJSON(w, http.StatusNotFound, res)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminActionTimeout)
	defer cancel()
	err := do(ctx)
	switch {
	case err == nil:
		res.OK = true
		s.log.Info("admin action", "silo", name, "action", action)
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, spawner.ErrUnknownSilo):
		res.Error = err.Error()
		writeJSON(w, http.StatusNotFound, res)
	case errors.Is(err, spawner.ErrDraining):
		res.Error = err.Error()
		writeJSON(w, http.StatusConflict, res)
	default:
		s.log.Warn("admin action failed", "silo", name, "action", action, "err", err)
		res.Error = err.Error()
		writeJSON(w, http.StatusServiceUnavailable, res)
	}
}

// knownSilo reports whether name is a configured silo or one the spawner
// still runs (a draining silo can still be stopped).
func (s *Server) knownSilo(name string) bool {
	if s.routes.Load().has(name) {
		return true
	}
	for _, st := range s.silos.Statuses() {
		if st.Name == name {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// hostIsAddress reports whether an HTTP Host header names an IP address or
// localhost, rather than a DNS name an attacker could rebind.
func hostIsAddress(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	return net.ParseIP(host) != nil
}
