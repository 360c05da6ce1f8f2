// Command testreport reads `go test -json` from stdin and prints what a
// reviewer of a CI log needs: one line per package, the full output of every
// failing test, every skipped test with its reason, and the totals. It exits
// non-zero when any test or package failed, or when the input holds no test
// results at all (a suite that silently ran nothing is a failure too).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type testKey struct{ pkg, test string }

type report struct {
	out      map[testKey]*strings.Builder
	result   map[testKey]string
	elapsed  map[testKey]float64
	pkgOrder []string
	pkgSeen  map[string]bool
	pkgRes   map[string]string
	pkgTime  map[string]float64
}

func newReport() *report {
	return &report{
		out:     map[testKey]*strings.Builder{},
		result:  map[testKey]string{},
		elapsed: map[testKey]float64{},
		pkgSeen: map[string]bool{},
		pkgRes:  map[string]string{},
		pkgTime: map[string]float64{},
	}
}

func (r *report) add(e event) {
	if e.Package != "" && !r.pkgSeen[e.Package] {
		r.pkgSeen[e.Package] = true
		r.pkgOrder = append(r.pkgOrder, e.Package)
	}
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "output":
		b := r.out[k]
		if b == nil {
			b = &strings.Builder{}
			r.out[k] = b
		}
		b.WriteString(e.Output)
	case "pass", "fail", "skip":
		if e.Test == "" {
			r.pkgRes[e.Package] = e.Action
			r.pkgTime[e.Package] = e.Elapsed
			return
		}
		r.result[k] = e.Action
		r.elapsed[k] = e.Elapsed
	}
}

// skipReason is the last meaningful line a skipped test printed.
func skipReason(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "--- SKIP") || strings.HasPrefix(l, "=== ") {
			continue
		}
		return l
	}
	return "(no reason given)"
}

func (r *report) print(w io.Writer) (failed bool) {
	var pass, fail, skip int
	var fails, skips []testKey
	for k, res := range r.result {
		switch res {
		case "pass":
			pass++
		case "fail":
			fail++
			fails = append(fails, k)
		case "skip":
			skip++
			skips = append(skips, k)
		}
	}
	less := func(s []testKey) func(i, j int) bool {
		return func(i, j int) bool {
			if s[i].pkg != s[j].pkg {
				return s[i].pkg < s[j].pkg
			}
			return s[i].test < s[j].test
		}
	}
	sort.Slice(fails, less(fails))
	sort.Slice(skips, less(skips))

	fmt.Fprintln(w, "== packages")
	var pkgFail int
	for _, p := range r.pkgOrder {
		res := r.pkgRes[p]
		switch res {
		case "pass":
			fmt.Fprintf(w, "ok    %-60s %6.1fs\n", p, r.pkgTime[p])
		case "skip":
			fmt.Fprintf(w, "?     %-60s [no test files]\n", p)
		default:
			pkgFail++
			fmt.Fprintf(w, "FAIL  %-60s %6.1fs\n", p, r.pkgTime[p])
			if res == "" || !hasFailedTest(fails, p) {
				// A build failure or a panic outside any test: show the
				// package-level output, which holds the reason.
				if b := r.out[testKey{p, ""}]; b != nil {
					fmt.Fprintln(w, indent(b.String()))
				}
			}
		}
	}
	if len(skips) > 0 {
		fmt.Fprintln(w, "\n== skipped tests")
		for _, k := range skips {
			out := ""
			if b := r.out[k]; b != nil {
				out = b.String()
			}
			fmt.Fprintf(w, "SKIP  %s %s: %s\n", shortPkg(k.pkg), k.test, skipReason(out))
		}
	}
	if len(fails) > 0 {
		fmt.Fprintln(w, "\n== failed tests")
		for _, k := range fails {
			fmt.Fprintf(w, "--- FAIL: %s %s (%.2fs)\n", shortPkg(k.pkg), k.test, r.elapsed[k])
			if b := r.out[k]; b != nil {
				fmt.Fprintln(w, indent(b.String()))
			}
		}
	}
	fmt.Fprintf(w, "\n== summary: %d passed, %d failed, %d skipped, %d packages failed\n", pass, fail, skip, pkgFail)
	if pass+fail == 0 {
		fmt.Fprintln(w, "no test ran: treating this as a failure")
		return true
	}
	return fail > 0 || pkgFail > 0
}

func hasFailedTest(fails []testKey, pkg string) bool {
	for _, k := range fails {
		if k.pkg == pkg {
			return true
		}
	}
	return false
}

func shortPkg(p string) string {
	if i := strings.Index(p, "/silo-proxy/"); i >= 0 {
		return p[i+len("/silo-proxy/"):]
	}
	return p
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func main() {
	r := newReport()
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not test2json: build errors and vet output arrive as text.
			fmt.Println(string(line))
			continue
		}
		r.add(e)
		if e.Action == "fail" && e.Test != "" {
			fmt.Printf("--- FAIL: %s %s\n", shortPkg(e.Package), e.Test)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testreport: reading input:", err)
		os.Exit(1)
	}
	if r.print(os.Stdout) {
		os.Exit(1)
	}
}
