//go:build !linux

package proxy

// loopRelay reports that no relay loop exists here: every session uses the
// goroutine relay.
func (ss *session) loopRelay() (c2s, s2c int64, ok bool, err error) {
	return 0, 0, false, nil
}
