package proxy

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/silo-proxy/silo-proxy/spawner"
)

// namespace prefixes every metric name (DESIGN.md §7).
const namespace = "silo_proxy"

// Values of the result label of silo_proxy_connections_total.
const (
	resultOK              = "ok"
	resultUnknownDatabase = "unknown_database"
	resultUnavailable     = "unavailable"
	resultTooManyClients  = "too_many_clients"
	resultProtocolError   = "protocol_error"
	resultTLSError        = "tls_error"
)

// Values of the direction label of silo_proxy_relay_bytes_total.
const (
	dirClientToServer = "client_to_server"
	dirServerToClient = "server_to_client"
)

// Metrics holds every metric of DESIGN.md §7 in a private registry. It also
// implements spawner.Observer, so the spawner's lifecycle events become the
// silo_* series; build it first and hand it to both spawner.New and New.
//
// Label values are bounded by the configuration: silo is a configured silo
// name, or "" for connections that never reached one (unknown databases,
// protocol errors), never a client-supplied string.
type Metrics struct {
	reg *prometheus.Registry

	clientConnections *prometheus.GaugeVec
	connections       *prometheus.CounterVec
	connectDuration   *prometheus.HistogramVec
	relayBytes        *prometheus.CounterVec
	siloUp            *prometheus.GaugeVec
	siloStarts        *prometheus.CounterVec
	siloStartDuration *prometheus.HistogramVec
	siloExits         *prometheus.CounterVec
	cancelRequests    *prometheus.CounterVec
	configReloads     *prometheus.CounterVec

	usage *usageCollector

	// mu guards configured and removed, which decide when a removed
	// silo's series are deleted.
	mu         sync.Mutex
	configured map[string]bool
	removed    map[string]bool
}

// NewMetrics builds the metrics and their registry. The cgroup usage gauges
// are served once New connects the registry to a Silos.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		clientConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "client_connections",
			Help: "Client sessions currently relayed to each silo.",
		}, []string{"silo"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "connections_total",
			Help: "Client connections by outcome of the startup phase; silo is empty when none was chosen.",
		}, []string{"silo", "result"}),
		connectDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "connect_duration_seconds",
			Help:    "Time from a complete startup packet to a connected postmaster socket, by whether the silo had to be started.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"silo", "start"}),
		relayBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "relay_bytes_total",
			Help: "Bytes relayed between clients and silos.",
		}, []string{"silo", "direction"}),
		siloUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "silo_up",
			Help: "1 while the silo's postmaster is running (including while it drains), else 0.",
		}, []string{"silo"}),
		siloStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "silo_starts_total",
			Help: "Postmaster starts by reason.",
		}, []string{"silo", "reason"}),
		siloStartDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "silo_start_duration_seconds",
			Help:    "Time from launching a silo to its postmaster accepting connections.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60},
		}, []string{"silo"}),
		siloExits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "silo_exits_total",
			Help: "Postmaster exits: clean (requested shutdown) or crash.",
		}, []string{"silo", "how"}),
		cancelRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cancel_requests_total",
			Help: "CancelRequests received, by whether their key matched a live session.",
		}, []string{"result"}),
		configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "config_reloads_total",
			Help: "Configuration reloads by result; a failed reload keeps the running config.",
		}, []string{"result"}),
		usage:      newUsageCollector(),
		configured: make(map[string]bool),
		removed:    make(map[string]bool),
	}
	m.reg.MustRegister(
		m.clientConnections, m.connections, m.connectDuration, m.relayBytes,
		m.siloUp, m.siloStarts, m.siloStartDuration, m.siloExits,
		m.cancelRequests, m.configReloads, m.usage,
	)
	for _, r := range []string{"forwarded", "unknown_key"} {
		m.cancelRequests.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.configReloads.WithLabelValues(r)
	}
	return m
}

// Registry returns the private registry /metrics serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// setSilos records the configured silos: new ones get their series
// initialised to zero, and removed ones are marked so that their series are
// deleted once they stopped (now, if statuses say so already). statuses
// must be taken before the call: the spawner may call the Observer methods
// while holding its own lock, so Metrics never calls into Silos under mu.
func (m *Metrics) setSilos(names []string, statuses []spawner.Status) {
	live := make(map[string]bool, len(statuses))
	for _, st := range statuses {
		if st.State != spawner.StateStopped && st.State != spawner.StateFailed {
			live[st.Name] = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]bool, len(names))
	for _, n := range names {
		next[n] = true
		delete(m.removed, n)
		if !m.configured[n] {
			m.siloUp.WithLabelValues(n)
			m.clientConnections.WithLabelValues(n)
		}
	}
	for n := range m.configured {
		if !next[n] {
			m.removed[n] = true
		}
	}
	m.configured = next
	for n := range m.removed {
		if !live[n] {
			m.deleteSiloLocked(n)
		}
	}
}

// deleteSiloLocked drops every series labelled with silo.
func (m *Metrics) deleteSiloLocked(silo string) {
	l := prometheus.Labels{"silo": silo}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.clientConnections, m.connections, m.connectDuration, m.relayBytes,
		m.siloUp, m.siloStarts, m.siloStartDuration, m.siloExits} {
		v.DeletePartialMatch(l)
	}
	delete(m.removed, silo)
}

// StateChanged implements spawner.Observer.
func (m *Metrics) StateChanged(silo string, from, to spawner.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.removed[silo] {
		if to == spawner.StateStopped || to == spawner.StateFailed {
			m.deleteSiloLocked(silo)
		}
		return
	}
	up := 0.0
	if to == spawner.StateRunning || to == spawner.StateDraining {
		up = 1
	}
	m.siloUp.WithLabelValues(silo).Set(up)
}

// SiloStarted implements spawner.Observer.
func (m *Metrics) SiloStarted(silo string, reason spawner.StartReason, took time.Duration) {
	m.siloStarts.WithLabelValues(silo, string(reason)).Inc()
	m.siloStartDuration.WithLabelValues(silo).Observe(took.Seconds())
}

// SiloExited implements spawner.Observer.
func (m *Metrics) SiloExited(silo string, clean bool) {
	how := "crash"
	if clean {
		how = "clean"
	}
	m.siloExits.WithLabelValues(silo, how).Inc()
}

var _ spawner.Observer = (*Metrics)(nil)

// usageCollector turns Silos.Usage into const metrics at scrape time, so
// the numbers are as fresh as the cgroup files and no goroutine polls them.
type usageCollector struct {
	memory, cpu, pids *prometheus.Desc

	mu    sync.Mutex
	silos func() ([]string, Silos)
}

func newUsageCollector() *usageCollector {
	return &usageCollector{
		memory: prometheus.NewDesc(prometheus.BuildFQName(namespace, "silo", "memory_bytes"),
			"Memory charged to the silo's cgroup.", []string{"silo"}, nil),
		cpu: prometheus.NewDesc(prometheus.BuildFQName(namespace, "silo", "cpu_seconds_total"),
			"CPU time consumed by the silo's cgroup.", []string{"silo"}, nil),
		pids: prometheus.NewDesc(prometheus.BuildFQName(namespace, "silo", "pids"),
			"Tasks in the silo's cgroup.", []string{"silo"}, nil),
	}
}

// bind sets the source of silo names and usage.
func (u *usageCollector) bind(f func() ([]string, Silos)) {
	u.mu.Lock()
	u.silos = f
	u.mu.Unlock()
}

func (u *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- u.memory
	ch <- u.cpu
	ch <- u.pids
}

func (u *usageCollector) Collect(ch chan<- prometheus.Metric) {
	u.mu.Lock()
	f := u.silos
	u.mu.Unlock()
	if f == nil {
		return
	}
	names, silos := f()
	for _, name := range names {
		us, ok := silos.Usage(name)
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(u.memory, prometheus.GaugeValue, float64(us.MemoryBytes), name)
		ch <- prometheus.MustNewConstMetric(u.cpu, prometheus.CounterValue, us.CPUSeconds, name)
		ch <- prometheus.MustNewConstMetric(u.pids, prometheus.GaugeValue, float64(us.Pids), name)
	}
}
