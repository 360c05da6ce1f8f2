package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// coldStarts measures, b.o.cold times each and alternating which goes
// first, the time from "nothing runs" to the answer of a first query:
//
//   - proxy: the silo is stopped and silo-proxy is running; a client
//     connects through the proxy, which starts the silo (namespaces,
//     root filesystem, postmaster) and relays the session once the
//     postmaster accepts; the client authenticates and runs SELECT 1.
//   - plain: the harness starts the plain postmaster on the same data
//     directory and the client retries every millisecond until it can
//     connect (TCP), authenticate and run SELECT 1.
//
// Both clients authenticate with SCRAM and run the same query, so both
// figures hold one login; neither includes stopping the server.
func (b *bench) coldStarts() error {
	proxyConn := connString("127.0.0.1", b.proxyPort, benchSilo, b.sf.password)
	plainConn := connString("127.0.0.1", b.plainPort, benchSilo, b.sf.password)
	plainDir := filepath.Join(b.work, "plain")
	var proxyMS, plainMS []float64
	sum0, n0, _ := b.siloStartMetric()
	for i := range b.o.cold {
		kinds := []string{"proxy", "plain"}
		if i%2 == 1 {
			kinds = []string{"plain", "proxy"}
		}
		for _, k := range kinds {
			switch k {
			case "proxy":
				ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
				t0 := time.Now()
				err := ping(ctx, proxyConn)
				d := time.Since(t0)
				cancel()
				if err != nil {
					return fmt.Errorf("first query through the proxy: %w\n%s", err, logTail(b.proxy.log, 20))
				}
				proxyMS = append(proxyMS, ms(d))
				if err := b.proxy.stopSilo(benchSilo); err != nil {
					return err
				}
			case "plain":
				t0 := time.Now()
				p, err := start(plainSpec(b.bindir, plainDir, b.sf, b.plainPort, pgSettings(benchMaxConnections)))
				if err != nil {
					return err
				}
				ps := &plainServer{proc: p, port: b.plainPort, sockDir: plainDir}
				err = waitFor("plain postmaster", 60*time.Second, time.Millisecond, func() error {
					if p.exited() {
						return fmt.Errorf("postmaster exited: %v\n%s", p.err, logTail(filepath.Join(plainDir, "postgres.log"), 20))
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					return ping(ctx, plainConn)
				})
				d := time.Since(t0)
				ps.stop()
				if err != nil {
					return err
				}
				plainMS = append(plainMS, ms(d))
			}
		}
		progress("cold start %d/%d: proxy %.1f ms, plain postmaster %.1f ms", i+1, b.o.cold, proxyMS[i], plainMS[i])
	}
	cr := &coldResult{Proxy: summarize(proxyMS), Plain: summarize(plainMS)}
	if sum1, n1, err := b.siloStartMetric(); err == nil && n1 > n0 {
		cr.SiloStartMeanMS = (sum1 - sum0) / (n1 - n0) * 1000
	}
	if cr.Plain.P50MS > 0 {
		cr.RatioP50 = cr.Proxy.P50MS / cr.Plain.P50MS
	}
	cr.PhasesP50MS = startPhases(b.proxy.log, benchSilo)
	b.res.ColdStart = cr
	return nil
}

// siloStartMetric reads the sum and count of the bench silo's
// silo_proxy_silo_start_duration_seconds histogram: the spawner's own
// measure of a start, from launch until the postmaster accepts.
func (b *bench) siloStartMetric() (sum, count float64, err error) {
	body, err := b.proxy.admin("GET", "/metrics")
	if err != nil {
		return 0, 0, err
	}
	sel := `{silo="` + benchSilo + `"}`
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		switch name {
		case "silo_proxy_silo_start_duration_seconds_sum" + sel:
			sum, _ = strconv.ParseFloat(val, 64)
		case "silo_proxy_silo_start_duration_seconds_count" + sel:
			count, _ = strconv.ParseFloat(val, 64)
		}
	}
	return sum, count, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// startPhases reads the spawner's "silo start phases" debug lines for silo
// from a proxy log and returns the median of every phase, in milliseconds.
// Any key=value whose value is a duration counts as a phase, so the
// breakdown follows the spawner's own as it changes.
func startPhases(logPath, silo string) map[string]float64 {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return nil
	}
	samples := map[string][]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, `msg="silo start phases"`) || !strings.Contains(line, " silo="+silo+" ") && !strings.HasSuffix(line, " silo="+silo) {
			continue
		}
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok || k == "time" {
				continue
			}
			if d, err := time.ParseDuration(v); err == nil {
				samples[k] = append(samples[k], ms(d))
			}
		}
	}
	if len(samples) == 0 {
		return nil
	}
	out := map[string]float64{}
	for k, v := range samples {
		out[k] = median(v)
	}
	return out
}
