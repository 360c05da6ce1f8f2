package proxy

import "testing"

func TestCancelMap(t *testing.T) {
	t.Parallel()
	m := newCancelMap()
	a := cancelTarget{silo: "a", socketPath: "/a"}
	b := cancelTarget{silo: "b", socketPath: "/b"}
	// The same pid in two silos (one pid namespace each), different
	// secrets: each key reaches only its own silo.
	keyA := []byte{0, 0, 0, 9, 1, 1, 1, 1}
	keyB := []byte{0, 0, 0, 9, 2, 2, 2, 2}
	m.add(keyA, a)
	m.add(keyB, b)
	if got := m.lookup(keyA); len(got) != 1 || got[0] != a {
		t.Fatalf("lookup(keyA) = %v", got)
	}
	if got := m.lookup(keyB); len(got) != 1 || got[0] != b {
		t.Fatalf("lookup(keyB) = %v", got)
	}
	forged := []byte{0, 0, 0, 9, 1, 1, 1, 2}
	if got := m.lookup(forged); got != nil {
		t.Fatalf("forged key found %v", got)
	}
	// A key's prefix (pid and part of a longer secret) must not match.
	if got := m.lookup(keyA[:7]); got != nil {
		t.Fatalf("truncated key found %v", got)
	}
	// Colliding keys are both kept; removing one leaves the other.
	m.add(keyA, b)
	if got := m.lookup(keyA); len(got) != 2 {
		t.Fatalf("colliding key: %v", got)
	}
	m.remove(keyA, a)
	if got := m.lookup(keyA); len(got) != 1 || got[0] != b {
		t.Fatalf("after removing one of two: %v", got)
	}
	m.remove(keyA, b)
	m.remove(keyB, b)
	m.remove(keyB, b) // removing twice is harmless
	if m.len() != 0 {
		t.Fatalf("%d keys left after every session ended", m.len())
	}
}
