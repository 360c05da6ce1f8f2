package spawner

import "time"

// Restart backoff after a silo crashed or failed to start: 1s, 2s, 4s, …
// capped at 30s (DESIGN.md §1), forgotten once the silo has run stably
// for backoffStable.
const (
	backoffFirst  = time.Second
	backoffMax    = 30 * time.Second
	backoffStable = time.Minute
)

// backoffDelay is the wait before the next start after failures
// consecutive failures (failures >= 1).
func backoffDelay(failures int) time.Duration {
	if failures < 1 {
		return 0
	}
	d := backoffFirst
	for i := 1; i < failures; i++ {
		d *= 2
		if d >= backoffMax {
			return backoffMax
		}
	}
	return d
}

// backoff counts a silo's consecutive failures.
type backoff struct {
	failures int
}

// failed records a failure of a silo that had been running since
// startedAt (zero when it never came up) and returns the delay before the
// next attempt. A run of at least backoffStable resets the count first: a
// silo that crashes once a day restarts after 1s every time.
func (b *backoff) failed(startedAt, now time.Time) time.Duration {
	if !startedAt.IsZero() && now.Sub(startedAt) >= backoffStable {
		b.failures = 0
	}
	b.failures++
	return backoffDelay(b.failures)
}
