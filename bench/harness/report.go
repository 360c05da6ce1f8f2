package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// results is everything one run measured; results.json is its encoding.
type results struct {
	Date     string            `json:"date"`
	Machine  map[string]string `json:"machine"`
	Versions map[string]string `json:"versions"`
	Settings map[string]any    `json:"settings"`
	Method   []string          `json:"method"`
	Points   []*pointResult    `json:"points"`
	// ColdStart and Idle are nil when their phase was skipped.
	ColdStart *coldResult `json:"cold_start,omitempty"`
	Idle      *idleResult `json:"idle_rss,omitempty"`
	Targets   []goal      `json:"targets"`

	// Order lists the targets in the order they were first measured.
	Order []string `json:"target_order"`

	rounds  int
	samples map[string]map[string][]sample // target -> point key -> per round
}

// pointResult is one point: per target the medians over rounds, and the
// comparisons, each computed within a round and then the median taken.
type pointResult struct {
	point
	Targets map[string]*targetResult `json:"targets"`
	// Ratios of tps, e.g. "proxy/direct", "proxy/pgbouncer".
	Ratios map[string]float64 `json:"ratios"`
	// AddedLatencyUS is a target's average latency minus direct's, in
	// microseconds: what it adds to every query.
	AddedLatencyUS map[string]float64 `json:"added_latency_us"`
}

type targetResult struct {
	TPS        float64  `json:"tps"`
	LatencyMS  float64  `json:"latency_ms"`
	CPUPerTxUS float64  `json:"cpu_per_tx_us,omitempty"`
	Rounds     []sample `json:"rounds"`
}

type dist struct {
	P50MS   float64   `json:"p50_ms"`
	P99MS   float64   `json:"p99_ms"`
	MinMS   float64   `json:"min_ms"`
	MaxMS   float64   `json:"max_ms"`
	Samples []float64 `json:"samples_ms"`
}

type coldResult struct {
	Proxy dist `json:"proxy"`
	Plain dist `json:"plain_postmaster"`
	// RatioP50 is proxy p50 / plain p50.
	RatioP50 float64 `json:"ratio_p50"`
	// SiloStartMeanMS is the spawner's own start duration (launch until
	// the postmaster accepts), mean over the proxy's cold starts.
	SiloStartMeanMS float64 `json:"silo_start_mean_ms,omitempty"`
	// PhasesP50MS is the median of each phase of the spawner's start
	// breakdown (its "silo start phases" debug log line).
	PhasesP50MS map[string]float64 `json:"start_phases_p50_ms,omitempty"`
}

type idleResult struct {
	// Requested is how many connections were to be opened; Connections
	// how many were open when the figures were taken. They differ when
	// the proxy refused more (Error says why).
	Requested     int     `json:"requested"`
	Connections   int     `json:"connections"`
	Error         string  `json:"error,omitempty"`
	FDLimit       int     `json:"proxy_fd_limit"`
	Silos         int     `json:"silos"`
	OpenSeconds   float64 `json:"open_seconds"`
	RSSBeforeKiB  int64   `json:"rss_before_kib"`
	RSSAfterKiB   int64   `json:"rss_after_kib"`
	AnonBeforeKiB int64   `json:"rss_anon_before_kib"`
	AnonAfterKiB  int64   `json:"rss_anon_after_kib"`
	ThreadsAfter  int64   `json:"threads_after"`
	FDsBefore     int     `json:"fds_before"`
	FDsAfter      int     `json:"fds_after"`
	PerConnBytes  float64 `json:"rss_per_conn_bytes"`
	PerConnAnonB  float64 `json:"rss_anon_per_conn_bytes"`
	FDsPerConn    float64 `json:"fds_per_conn"`
	// Relays holds the same measure for the experimental relays.
	Relays map[string]*idleResult `json:"relays,omitempty"`
}

// goal is one acceptance target of the performance issue and whether this
// run met it.
type goal struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Limit    float64 `json:"limit"`
	Unit     string  `json:"unit"`
	Compare  string  `json:"compare"` // ">=" or "<=" Limit
	Met      bool    `json:"met"`
	Measured bool    `json:"measured"`
}

func newResults(o options, b *bench) *results {
	r := &results{
		Date:     time.Now().UTC().Format(time.RFC3339),
		Machine:  machineInfo(),
		Versions: map[string]string{"go": runtime.Version()},
		Settings: map[string]any{
			"rounds": o.rounds, "duration_s": int(o.duration.Round(time.Second) / time.Second),
			"warmup_s": o.warmup.Seconds(), "scale": o.scale, "cold_starts": o.cold,
			"idle_connections": o.idle, "shared_buffers": pgSettings(benchMaxConnections)["shared_buffers"],
			"max_connections": benchMaxConnections, "relays": o.relays, "proxy_env": strings.Join(o.proxyEnv, " "),
			"silo_cpu_shares": o.cpuShares,
		},
		Method: []string{
			"one data directory, bootstrapped by silo-proxy for silo bench; pgbench -i at the given scale",
			"direct: the same postgres binary on the same data directory as the silo's host uid, same settings, TCP 127.0.0.1, scram-sha-256",
			"pgbouncer: PgBouncer session mode, TCP 127.0.0.1, scram-sha-256 from the client, to the running silo's Unix socket with scram-sha-256",
			"proxy: silo-proxy TCP 127.0.0.1 to the silo's Unix socket; the silo authenticates with scram-sha-256",
			"every round runs a plain phase (direct) and a silo phase (proxy, pgbouncer, relays, back to back per point, rotating order), phases alternating in order",
			"values are medians over rounds; ratios and added latencies are computed within each round, then the median taken",
			"pgbench -n -S; -j = min(clients, 2), and -j = clients for -C",
		},
		rounds:  o.rounds,
		samples: map[string]map[string][]sample{},
	}
	if out, err := runOutput(filepath.Join(b.bindir, "postgres"), "--version"); err == nil {
		r.Versions["postgres"] = strings.TrimSpace(out)
	}
	if o.pgbouncerBin != "" {
		if out, err := runOutput(o.pgbouncerBin, "--version"); err == nil {
			r.Versions["pgbouncer"] = strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
		}
	}
	if out, err := runOutput(o.proxyBin, "version"); err == nil {
		r.Versions["silo-proxy"] = strings.TrimSpace(out)
	}
	if out, err := runOutput("pgbench", "--version"); err == nil {
		r.Versions["pgbench"] = strings.TrimSpace(out)
	}
	return r
}

func machineInfo() map[string]string {
	m := map[string]string{"cpus": fmt.Sprint(runtime.NumCPU()), "arch": runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := runOutput("uname", "-r"); err == nil {
		m["kernel"] = strings.TrimSpace(out)
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				m["os"] = strings.Trim(v, `"`)
			}
		}
	}
	m["loadavg_start"] = loadavg()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			m["memory"] = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
		}
	}
	return m
}

// loadavg is /proc/loadavg's 1, 5 and 15 minute averages: other work on
// the machine during a run shows in them.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func (r *results) add(name string, p point, round int, s sample) {
	byPoint, ok := r.samples[name]
	if !ok {
		byPoint = map[string][]sample{}
		r.samples[name] = byPoint
		r.Order = append(r.Order, name)
	}
	if byPoint[p.key()] == nil {
		byPoint[p.key()] = make([]sample, r.rounds)
	}
	byPoint[p.key()][round] = s
}

// median returns 0 for no values: JSON has no NaN, and every figure the
// harness takes a median of is positive when measured.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the nearest-rank percentile: with 20 samples p99 is the
// largest.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func summarize(v []float64) dist {
	return dist{P50MS: percentile(v, 50), P99MS: percentile(v, 99), MinMS: slices.Min(v), MaxMS: slices.Max(v), Samples: v}
}

func ok(s sample) bool { return s.Failed == "" && s.TPS > 0 }

// finish computes the per-point medians and comparisons.
func (r *results) finish(pts []point) {
	r.Points = nil
	for _, p := range pts {
		pr := &pointResult{point: p, Targets: map[string]*targetResult{}, Ratios: map[string]float64{}, AddedLatencyUS: map[string]float64{}}
		for _, name := range r.Order {
			rounds := r.samples[name][p.key()]
			if rounds == nil {
				continue
			}
			var tps, lat, cpu []float64
			for _, s := range rounds {
				if ok(s) {
					tps, lat = append(tps, s.TPS), append(lat, s.LatencyMS)
					if s.CPUPerTxUS > 0 {
						cpu = append(cpu, s.CPUPerTxUS)
					}
				}
			}
			tr := &targetResult{Rounds: rounds, TPS: median(tps), LatencyMS: median(lat)}
			if len(cpu) > 0 {
				tr.CPUPerTxUS = median(cpu)
			}
			pr.Targets[name] = tr
		}
		for _, name := range r.Order {
			for _, base := range []string{"direct", "pgbouncer"} {
				if name == base || (base == "pgbouncer" && name == "direct") {
					continue
				}
				if v, ok := r.perRound(name, base, p, func(a, b sample) float64 { return a.TPS / b.TPS }); ok {
					pr.Ratios[name+"/"+base] = v
				}
			}
			if name != "direct" {
				if v, ok := r.perRound(name, "direct", p, func(a, b sample) float64 { return (a.LatencyMS - b.LatencyMS) * 1000 }); ok {
					pr.AddedLatencyUS[name] = v
				}
			}
		}
		r.Points = append(r.Points, pr)
	}
}

// perRound applies f to the samples of a and b of each round where both
// succeeded and returns the median.
func (r *results) perRound(a, b string, p point, f func(a, b sample) float64) (float64, bool) {
	as, bs := r.samples[a][p.key()], r.samples[b][p.key()]
	if as == nil || bs == nil {
		return 0, false
	}
	var v []float64
	for i := range as {
		if ok(as[i]) && ok(bs[i]) {
			v = append(v, f(as[i], bs[i]))
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	return median(v), true
}

func (r *results) point(mode string, clients int) *pointResult {
	for _, p := range r.Points {
		if p.Mode == mode && p.Clients == clients {
			return p
		}
	}
	return nil
}

// goals evaluates the acceptance targets of the performance issue.
func (r *results) goals(connClients int) {
	g := func(name string, value, limit float64, unit string, atLeast, measured bool) {
		met := measured && (atLeast && value >= limit || !atLeast && value <= limit)
		cmp := "<="
		if atLeast {
			cmp = ">="
		}
		r.Targets = append(r.Targets, goal{Name: name, Value: value, Limit: limit, Unit: unit, Compare: cmp, Met: met, Measured: measured})
	}
	if p := r.point("simple", 8); p != nil {
		v, ok := p.Ratios["proxy/pgbouncer"]
		g("select-only tps at 8 clients, proxy/pgbouncer (simple)", v, 1.0, "x", true, ok)
	}
	if p := r.point("prepared", 8); p != nil {
		v, ok := p.Ratios["proxy/pgbouncer"]
		g("select-only tps at 8 clients, proxy/pgbouncer (prepared)", v, 1.0, "x", true, ok)
	}
	if p := r.point("simple", 1); p != nil {
		pv, ok1 := p.AddedLatencyUS["proxy"]
		bv, ok2 := p.AddedLatencyUS["pgbouncer"]
		g("added latency per query at 1 client, proxy minus pgbouncer (simple)", pv-bv, 0, "µs", false, ok1 && ok2)
	}
	if p := r.point("connect", connClients); p != nil {
		v, ok := p.Ratios["proxy/direct"]
		g(fmt.Sprintf("-C connection rate at %d clients, proxy/direct", connClients), v, 0.95, "x", true, ok)
	}
	if c := r.ColdStart; c != nil {
		g("cold start to first query p50, proxy/plain postmaster", c.RatioP50, 1.2, "x", false, true)
	}
	if i := r.Idle; i != nil {
		g("proxy RSS per idle client connection", i.PerConnBytes/1024, 32, "KiB", false, true)
		g(fmt.Sprintf("idle client connections held, of %d requested", i.Requested), float64(i.Connections), float64(i.Requested), "", true, true)
	}
}

// write finishes the results and writes results.json, results.txt (the
// table, also printed on stdout) and results.png.
func (r *results) write(outDir, work string) error {
	pts := make([]point, 0)
	seen := map[string]bool{}
	for _, name := range r.Order {
		for k := range r.samples[name] {
			seen[k] = true
		}
	}
	for _, p := range allPoints(seen) {
		pts = append(pts, p)
	}
	r.Machine["loadavg_end"] = loadavg()
	sort.SliceStable(r.Order, func(i, j int) bool { return targetRank(r.Order[i]) < targetRank(r.Order[j]) })
	r.finish(pts)
	connClients := 0
	for _, p := range pts {
		if p.Mode == "connect" {
			connClients = p.Clients
		}
	}
	r.goals(connClients)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "results.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var table strings.Builder
	r.table(&table)
	fmt.Print(table.String())
	if err := os.WriteFile(filepath.Join(outDir, "results.txt"), []byte(table.String()), 0o644); err != nil {
		return err
	}
	if err := r.chart(filepath.Join(outDir, "results.png"), work); err != nil {
		fmt.Fprintln(os.Stderr, "silo-bench: chart:", err)
	}
	return nil
}

// targetRank orders targets in reports: direct, PgBouncer, the proxy, the
// experimental relays, then the diagnostic socket targets.
func targetRank(name string) int {
	switch {
	case name == "direct":
		return 0
	case name == "pgbouncer":
		return 1
	case name == "proxy":
		return 2
	case strings.HasSuffix(name, "-unix"):
		return 4
	}
	return 3
}

// allPoints orders point keys as the harness runs them: simple, prepared,
// connect, each by clients.
func allPoints(keys map[string]bool) []point {
	var pts []point
	for k := range keys {
		var p point
		var mode string
		var c int
		if n, _ := fmt.Sscanf(strings.Replace(k, "/", " ", 1), "%s %d", &mode, &c); n == 2 {
			p = point{Mode: mode, Clients: c}
			pts = append(pts, p)
		}
	}
	rank := map[string]int{"simple": 0, "prepared": 1, "connect": 2}
	sort.Slice(pts, func(i, j int) bool {
		if rank[pts[i].Mode] != rank[pts[j].Mode] {
			return rank[pts[i].Mode] < rank[pts[j].Mode]
		}
		return pts[i].Clients < pts[j].Clients
	})
	return pts
}

func f0(v float64) string {
	if math.IsNaN(v) || v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

func f2(v float64, ok bool) string {
	if !ok || math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

func f3(v float64) string {
	if math.IsNaN(v) || v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", v)
}

// table writes the human-readable report.
func (r *results) table(w io.Writer) {
	fmt.Fprintf(w, "silo-proxy benchmark, %s\n", r.Date)
	fmt.Fprintf(w, "machine: %s CPUs (%s), %s, %s, %s\n", r.Machine["cpus"], r.Machine["cpu"], r.Machine["memory"], r.Machine["os"], r.Machine["kernel"])
	fmt.Fprintf(w, "versions: %s; %s; %s; %s\n", r.Versions["postgres"], r.Versions["pgbouncer"], r.Versions["silo-proxy"], r.Versions["go"])
	fmt.Fprintf(w, "load average at start %s, at end %s\n", r.Machine["loadavg_start"], r.Machine["loadavg_end"])
	fmt.Fprintf(w, "method: %v rounds x %vs per point, pgbench -S scale %v, medians over rounds; see bench/README.md\n\n",
		r.Settings["rounds"], r.Settings["duration_s"], r.Settings["scale"])

	if len(r.Points) > 0 {
		fmt.Fprintf(w, "%-14s | %8s %8s | %8s %8s | %8s %8s | %7s %7s %7s | %7s %7s | %6s %6s\n",
			"", "direct", "", "pgbouncer", "", "proxy", "", "pgb/", "proxy/", "proxy/", "added", "µs", "CPU µs", "/tx")
		fmt.Fprintf(w, "%-14s | %8s %8s | %8s %8s | %8s %8s | %7s %7s %7s | %7s %7s | %6s %6s\n",
			"point", "tps", "lat ms", "tps", "lat ms", "tps", "lat ms", "direct", "direct", "pgb", "pgb", "proxy", "pgb", "proxy")
		fmt.Fprintln(w, strings.Repeat("-", 143))
		for _, p := range r.Points {
			get := func(n string) *targetResult {
				if t := p.Targets[n]; t != nil {
					return t
				}
				return &targetResult{TPS: math.NaN(), LatencyMS: math.NaN()}
			}
			d, b, x := get("direct"), get("pgbouncer"), get("proxy")
			bd, okbd := p.Ratios["pgbouncer/direct"]
			rd, okd := p.Ratios["proxy/direct"]
			rb, okb := p.Ratios["proxy/pgbouncer"]
			ab, oka := p.AddedLatencyUS["pgbouncer"]
			ax, okx := p.AddedLatencyUS["proxy"]
			fmt.Fprintf(w, "%-14s | %8s %8s | %8s %8s | %8s %8s | %7s %7s %7s | %7s %7s | %6s %6s\n",
				p.label(), f0(d.TPS), f3(d.LatencyMS), f0(b.TPS), f3(b.LatencyMS), f0(x.TPS), f3(x.LatencyMS),
				f2(bd, okbd), f2(rd, okd), f2(rb, okb), fmt.Sprintf("%.0f", ab)+nd(oka), fmt.Sprintf("%.0f", ax)+nd(okx),
				cpuCol(b.CPUPerTxUS), cpuCol(x.CPUPerTxUS))
		}
		var extra []string
		for _, n := range r.Order {
			if n != "direct" && n != "pgbouncer" && n != "proxy" {
				extra = append(extra, n)
			}
		}
		if len(extra) > 0 {
			fmt.Fprintf(w, "\nother targets (relay-*: bench/experiments/relay on the silo's socket; *-unix: pgbench on a postmaster's own socket)\n")
			fmt.Fprintf(w, "%-14s %-16s | %8s %8s | %7s %7s | %8s | %6s\n", "point", "target", "tps", "lat ms", "/direct", "/pgb", "added µs", "CPU/tx")
			fmt.Fprintln(w, strings.Repeat("-", 90))
			for _, p := range r.Points {
				for _, n := range extra {
					t := p.Targets[n]
					if t == nil {
						continue
					}
					rd, okd := p.Ratios[n+"/direct"]
					rb, okb := p.Ratios[n+"/pgbouncer"]
					a, oka := p.AddedLatencyUS[n]
					fmt.Fprintf(w, "%-14s %-16s | %8s %8s | %7s %7s | %8s | %6s\n", p.label(), n, f0(t.TPS), f3(t.LatencyMS),
						f2(rd, okd), f2(rb, okb), fmt.Sprintf("%.0f", a)+nd(oka), cpuCol(t.CPUPerTxUS))
				}
			}
		}
	}
	if c := r.ColdStart; c != nil {
		fmt.Fprintf(w, "\ncold start to first query (%d each): proxy p50 %.1f ms p99 %.1f ms; plain postmaster p50 %.1f ms p99 %.1f ms; p50 ratio %.2f",
			len(c.Proxy.Samples), c.Proxy.P50MS, c.Proxy.P99MS, c.Plain.P50MS, c.Plain.P99MS, c.RatioP50)
		if c.SiloStartMeanMS > 0 {
			fmt.Fprintf(w, " (spawner's silo start: mean %.1f ms)", c.SiloStartMeanMS)
		}
		fmt.Fprintln(w)
		if len(c.PhasesP50MS) > 0 {
			keys := make([]string, 0, len(c.PhasesP50MS))
			for k := range c.PhasesP50MS {
				keys = append(keys, k)
			}
			sort.Slice(keys, func(i, j int) bool { return c.PhasesP50MS[keys[i]] > c.PhasesP50MS[keys[j]] })
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s %.1f", k, c.PhasesP50MS[k]))
			}
			fmt.Fprintf(w, "  silo start phases, p50 ms (spawner's breakdown): %s\n", strings.Join(parts, ", "))
		}
	}
	if i := r.Idle; i != nil {
		fmt.Fprintf(w, "idle connections: %d over %d silos; proxy VmRSS %d -> %d KiB = %.1f KiB per connection (anonymous %.1f KiB); %.1f fds per connection (limit %d); %d threads\n",
			i.Connections, i.Silos, i.RSSBeforeKiB, i.RSSAfterKiB, i.PerConnBytes/1024, i.PerConnAnonB/1024, i.FDsPerConn, i.FDLimit, i.ThreadsAfter)
		if i.Connections < i.Requested {
			fmt.Fprintf(w, "  only %d of the %d requested connections could be opened: %s\n", i.Connections, i.Requested, i.Error)
		}
		names := make([]string, 0, len(i.Relays))
		for n := range i.Relays {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			ri := i.Relays[n]
			fmt.Fprintf(w, "  %s: %d connections, VmRSS %d -> %d KiB = %.1f KiB per connection; %.1f fds per connection; %d threads\n",
				n, ri.Connections, ri.RSSBeforeKiB, ri.RSSAfterKiB, ri.PerConnBytes/1024, ri.FDsPerConn, ri.ThreadsAfter)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\ntargets:\n")
		for _, g := range r.Targets {
			mark := "MET    "
			if !g.Measured {
				mark = "NOT RUN"
			} else if !g.Met {
				mark = "NOT MET"
			}
			fmt.Fprintf(w, "  %s  %-72s %8.2f %s (target %s %g)\n", mark, g.Name, g.Value, g.Unit, g.Compare, g.Limit)
		}
	}
}

func nd(ok bool) string {
	if ok {
		return ""
	}
	return "?"
}

func cpuCol(v float64) string {
	if v == 0 || math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// targetColors keeps a target's colour the same in every panel.
var targetColors = map[string]string{
	"direct": "#7f7f7f", "pgbouncer": "#1b9e77", "proxy": "#7570b3",
}

var extraColors = []string{"#d95f02", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4"}

func colorOf(name string, i int) string {
	if c, ok := targetColors[name]; ok {
		return c
	}
	return extraColors[i%len(extraColors)]
}

// chart renders results.png with gnuplot: select-only throughput relative
// to direct for every point and target, the latency each target adds per
// query, the -C connection rates, and the cold starts.
func (r *results) chart(path, work string) error {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return fmt.Errorf("gnuplot not found: install gnuplot-nox")
	}
	var names []string // targets compared with direct
	for _, n := range r.Order {
		if n != "direct" && !strings.HasSuffix(n, "-unix") {
			names = append(names, n)
		}
	}
	var sel, conn []*pointResult
	for _, p := range r.Points {
		if p.Mode == "connect" {
			conn = append(conn, p)
		} else {
			sel = append(sel, p)
		}
	}
	var gp strings.Builder
	fmt.Fprintf(&gp, "set terminal pngcairo size 1200,1100 font 'sans,10'\nset output %q\n", path)
	fmt.Fprintf(&gp, "set multiplot title %q\n",
		fmt.Sprintf("silo-proxy vs direct vs PgBouncer (session mode): %s, %s CPUs, %v rounds x %vs, pgbench -S scale %v, medians",
			r.Date[:10], r.Machine["cpus"], r.Settings["rounds"], r.Settings["duration_s"], r.Settings["scale"]))
	fmt.Fprintf(&gp, "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.85 border -1\n")
	fmt.Fprintf(&gp, "set key inside left top horizontal\nset grid ytics\nset xtics nomirror\nset datafile separator '\\t'\nset datafile missing 'NaN'\n")

	if len(sel) > 0 && len(names) > 0 {
		var dat strings.Builder
		for _, p := range sel {
			fmt.Fprintf(&dat, "%q", p.label())
			for _, n := range names {
				ratio, ok1 := p.Ratios[n+"/direct"]
				add, ok2 := p.AddedLatencyUS[n]
				fmt.Fprintf(&dat, "\t%s\t%s", gnum(ratio, ok1), gnum(add, ok2))
			}
			fmt.Fprintln(&dat)
		}
		fmt.Fprintf(&gp, "$sel << EOD\n%sEOD\n", dat.String())
		fmt.Fprintf(&gp, "set origin 0,0.62\nset size 1,0.35\n")
		fmt.Fprintf(&gp, "set title 'select-only throughput relative to direct TCP (1.0 = direct)'\nset ylabel 'tps / direct tps'\nset yrange [0:*]\n")
		fmt.Fprintf(&gp, "plot ")
		for i, n := range names {
			fmt.Fprintf(&gp, "$sel using %d:xtic(1) title %q lc rgb %q, ", 2+2*i, n, colorOf(n, i))
		}
		fmt.Fprintf(&gp, "1 with lines lc rgb 'black' dt 2 notitle\n")
		fmt.Fprintf(&gp, "set origin 0,0.32\nset size 1,0.30\n")
		fmt.Fprintf(&gp, "set title 'latency added per query vs direct TCP (µs)'\nset ylabel 'µs'\nset yrange [*:*]\n")
		fmt.Fprintf(&gp, "plot ")
		for i, n := range names {
			if i > 0 {
				fmt.Fprintf(&gp, ", ")
			}
			fmt.Fprintf(&gp, "$sel using %d:xtic(1) title %q lc rgb %q", 3+2*i, n, colorOf(n, i))
		}
		fmt.Fprintf(&gp, "\n")
	}
	if len(conn) > 0 {
		all := append([]string{"direct"}, names...)
		var dat strings.Builder
		for _, p := range conn {
			for i, n := range all {
				t := p.Targets[n]
				if t == nil || t.TPS == 0 {
					continue
				}
				var rgb int
				fmt.Sscanf(colorOf(n, i-1), "#%x", &rgb)
				fmt.Fprintf(&dat, "%q\t%.1f\t%d\n", n, t.TPS, rgb)
			}
		}
		fmt.Fprintf(&gp, "$conn << EOD\n%sEOD\n", dat.String())
		fmt.Fprintf(&gp, "set origin 0,0\nset size 0.5,0.31\nset style fill solid 0.85 border -1\nset boxwidth 0.6\n")
		fmt.Fprintf(&gp, "set title %q\nset ylabel 'connections/s'\nset yrange [0:*]\nunset key\n", conn[0].label()+": new connection per transaction")
		fmt.Fprintf(&gp, "plot $conn using 0:2:(0.6):3:xtic(1) with boxes lc rgb variable\n")
	}
	if c := r.ColdStart; c != nil {
		fmt.Fprintf(&gp, "set origin 0.5,0\nset size 0.5,0.31\nset style data histograms\nset key inside left top\n")
		fmt.Fprintf(&gp, "set title 'cold start to first query (ms, %d each)'\nset ylabel 'ms'\nset yrange [0:*]\n", len(c.Proxy.Samples))
		fmt.Fprintf(&gp, "$cold << EOD\n\"p50\"\t%.2f\t%.2f\n\"p99\"\t%.2f\t%.2f\nEOD\n", c.Plain.P50MS, c.Proxy.P50MS, c.Plain.P99MS, c.Proxy.P99MS)
		fmt.Fprintf(&gp, "plot $cold using 2:xtic(1) title 'plain postmaster' lc rgb %q, $cold using 3 title 'silo via proxy' lc rgb %q\n",
			targetColors["direct"], targetColors["proxy"])
	}
	fmt.Fprintf(&gp, "unset multiplot\n")
	gpPath := filepath.Join(work, "chart.gp")
	if err := os.WriteFile(gpPath, []byte(gp.String()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("gnuplot", gpPath).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, out)
	}
	return nil
}

// replot prints the table of a results.json and renders its chart again
// (results.png in the same directory).
func replot(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	r.table(os.Stdout)
	work, err := os.MkdirTemp("", "silo-bench-chart.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	return r.chart(filepath.Join(filepath.Dir(path), "results.png"), work)
}

func gnum(v float64, ok bool) string {
	if !ok || math.IsNaN(v) {
		return "NaN"
	}
	return fmt.Sprintf("%.4f", v)
}
