package proxy

import (
	"sync"
)

// cancelTarget is where a CancelRequest for one session goes: the socket
// of the postmaster that runs the session's backend.
type cancelTarget struct {
	silo       string
	socketPath string
}

// cancelMap routes CancelRequests. Every silo has its own pid namespace, so
// backend pids repeat across silos; entries are therefore keyed by the whole
// BackendKeyData payload (pid and secret, 8 to 260 bytes), never by pid.
// A request whose key matches no live session is dropped, so a client that
// guesses pids cancels nothing.
type cancelMap struct {
	mu sync.Mutex
	// m holds the sessions that announced each key. Two live sessions in
	// different silos sharing pid and a random secret is improbable but
	// possible; both are kept so that the end of one does not orphan the
	// other.
	m map[string][]cancelTarget
}

func newCancelMap() *cancelMap {
	return &cancelMap{m: make(map[string][]cancelTarget)}
}

// add records key (copied) for a session that runs on target.
func (c *cancelMap) add(key []byte, target cancelTarget) {
	c.mu.Lock()
	k := string(key)
	c.m[k] = append(c.m[k], target)
	c.mu.Unlock()
}

// remove forgets one record of key for target, at the end of its session.
func (c *cancelMap) remove(key []byte, target cancelTarget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts, ok := c.m[string(key)]
	if !ok {
		return
	}
	for i, t := range ts {
		if t == target {
			ts = append(ts[:i], ts[i+1:]...)
			break
		}
	}
	if len(ts) == 0 {
		delete(c.m, string(key))
	} else {
		c.m[string(key)] = ts
	}
}

// lookup returns the targets registered for key, nil when none.
func (c *cancelMap) lookup(key []byte) []cancelTarget {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.m[string(key)]
	if len(ts) == 0 {
		return nil
	}
	return append([]cancelTarget(nil), ts...)
}

// len returns the number of keys recorded.
func (c *cancelMap) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
