package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
)

func feed(t *testing.T, lines string) *report {
	t.Helper()
	r := newReport()
	sc := bufio.NewScanner(strings.NewReader(lines))
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("bad fixture line %q: %v", sc.Text(), err)
		}
		r.add(e)
	}
	return r
}

func TestReport(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		in         string
		wantFailed bool
		want       []string
	}{
		{
			name: "all pass",
			in: `{"Action":"run","Package":"m/a","Test":"TestX"}
{"Action":"pass","Package":"m/a","Test":"TestX","Elapsed":0.1}
{"Action":"pass","Package":"m/a","Elapsed":0.2}`,
			want: []string{"ok    m/a", "1 passed, 0 failed, 0 skipped, 0 packages failed"},
		},
		{
			name: "failure output shown",
			in: `{"Action":"output","Package":"m/a","Test":"TestX","Output":"x_test.go:9: boom\n"}
{"Action":"fail","Package":"m/a","Test":"TestX","Elapsed":0.1}
{"Action":"fail","Package":"m/a","Elapsed":0.2}`,
			wantFailed: true,
			want:       []string{"FAIL  m/a", "--- FAIL: m/a TestX", "x_test.go:9: boom", "0 passed, 1 failed"},
		},
		{
			name: "skip reason shown",
			in: `{"Action":"output","Package":"m/a","Test":"TestRoot","Output":"    h.go:3: needs root\n"}
{"Action":"output","Package":"m/a","Test":"TestRoot","Output":"--- SKIP: TestRoot (0.00s)\n"}
{"Action":"skip","Package":"m/a","Test":"TestRoot"}
{"Action":"pass","Package":"m/a","Test":"TestY"}
{"Action":"pass","Package":"m/a"}`,
			want: []string{"SKIP  m/a TestRoot: h.go:3: needs root", "1 passed, 0 failed, 1 skipped"},
		},
		{
			name: "build failure without tests",
			in: `{"Action":"output","Package":"m/b","Output":"b.go:1: syntax error\n"}
{"Action":"fail","Package":"m/b","Elapsed":0}
{"Action":"pass","Package":"m/a","Test":"TestX"}
{"Action":"pass","Package":"m/a"}`,
			wantFailed: true,
			want:       []string{"FAIL  m/b", "b.go:1: syntax error", "1 packages failed"},
		},
		{
			name:       "nothing ran",
			in:         `{"Action":"skip","Package":"m/c"}`,
			wantFailed: true,
			want:       []string{"no test ran"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var b strings.Builder
			failed := feed(t, c.in).print(&b)
			if failed != c.wantFailed {
				t.Errorf("failed = %v, want %v\n%s", failed, c.wantFailed, b.String())
			}
			for _, w := range c.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
