package spawner

import (
	"testing"
	"time"
)

func TestBackoffDelaySchedule(t *testing.T) {
	t.Parallel()
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for failures, w := range want {
		if got := backoffDelay(failures); got != w {
			t.Errorf("backoffDelay(%d) = %s, want %s", failures, got, w)
		}
	}
	if got := backoffDelay(1000); got != backoffMax {
		t.Errorf("backoffDelay(1000) = %s, want the cap %s", got, backoffMax)
	}
}

func TestBackoffResetsAfterStableRun(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		history []time.Duration // run time before each failure; <0: never came up
		want    time.Duration
	}{
		{"first crash", []time.Duration{time.Second}, time.Second},
		{"crash loop", []time.Duration{time.Second, time.Second, time.Second}, 4 * time.Second},
		{"failed starts count too", []time.Duration{-1, -1, -1, -1, -1, -1, -1}, backoffMax},
		{"stable run resets", []time.Duration{time.Second, time.Second, time.Second, backoffStable}, time.Second},
		{"just short of stable", []time.Duration{time.Second, time.Second, backoffStable - time.Millisecond}, 4 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b backoff
			var got time.Duration
			for _, ran := range tc.history {
				var started time.Time
				if ran >= 0 {
					started = now.Add(-ran)
				}
				got = b.failed(started, now)
			}
			if got != tc.want {
				t.Errorf("delay = %s, want %s", got, tc.want)
			}
		})
	}
}
