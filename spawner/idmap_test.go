package spawner

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeEtc serves host id databases from a map; absent keys are missing
// files.
func fakeEtc(files map[string]string) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		s, ok := files[p]
		if !ok {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		}
		return []byte(s), nil
	}
}

func TestAllocateIDRange(t *testing.T) {
	t.Parallel()
	pool := uint64(idPoolStart)
	cases := []struct {
		name  string
		taken []idSpan
		want  uint32
	}{
		{"empty pool", nil, idPoolStart},
		{"first block taken", []idSpan{{start: pool, end: pool + IDRangeSize}}, idPoolStart + IDRangeSize},
		{"one id inside the first block", []idSpan{{start: pool + 1000, end: pool + 1001}}, idPoolStart + IDRangeSize},
		{"last id of the first block", []idSpan{{start: pool + IDRangeSize - 1, end: pool + IDRangeSize}}, idPoolStart + IDRangeSize},
		{"ids below the pool do not matter", []idSpan{{start: 0, end: 65536}, {start: 100000, end: 165536}}, idPoolStart},
		{"span straddling two blocks", []idSpan{{start: pool + 60000, end: pool + 70000}}, idPoolStart + 2*IDRangeSize},
		{"unsorted spans", []idSpan{
			{start: pool + 2*IDRangeSize, end: pool + 3*IDRangeSize},
			{start: pool, end: pool + IDRangeSize},
			{start: pool + IDRangeSize + 5, end: pool + IDRangeSize + 6},
		}, idPoolStart + 3*IDRangeSize},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := allocateIDRange(tc.taken, 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.HostID != tc.want || r.Size != IDRangeSize {
				t.Errorf("allocateIDRange = %+v, want host_id %d", r, tc.want)
			}
			for _, s := range tc.taken {
				if r.overlaps(s) {
					t.Errorf("allocated %+v overlaps taken span %+v", r, s)
				}
			}
		})
	}
	t.Run("pool exhausted", func(t *testing.T) {
		t.Parallel()
		if r, err := allocateIDRange([]idSpan{{start: pool, end: idPoolEnd}}, 7); err == nil {
			t.Errorf("allocateIDRange on a full pool = %+v, want an error", r)
		}
	})
	t.Run("search starts at the given block and wraps", func(t *testing.T) {
		t.Parallel()
		last := uint64(idPoolBlocks - 1)
		lastBase := pool + last*IDRangeSize
		r, err := allocateIDRange(nil, last)
		if err != nil || uint64(r.HostID) != lastBase {
			t.Errorf("allocateIDRange(nil, last) = %+v, %v; want host_id %d", r, err, lastBase)
		}
		if r.end() > idPoolEnd {
			t.Errorf("last block %+v passes the end of the pool", r)
		}
		r, err = allocateIDRange([]idSpan{{start: lastBase, end: lastBase + 1}}, last)
		if err != nil || r.HostID != idPoolStart {
			t.Errorf("allocateIDRange past a taken last block = %+v, %v; want the wrap to %d", r, err, idPoolStart)
		}
	})
}

func TestIDSearchStart(t *testing.T) {
	t.Parallel()
	a, b := idSearchStart("/var/lib/silo-proxy"), idSearchStart("/srv/other-proxy/state")
	if a == b {
		t.Errorf("two state_dirs start their search at the same block %d", a)
	}
	if a != idSearchStart("/var/lib/silo-proxy/") {
		t.Error("the search start depends on a trailing slash")
	}
	for _, v := range []uint64{a, b} {
		if v >= idPoolBlocks/2 {
			t.Errorf("start block %d is outside the first half of the pool", v)
		}
	}
}

func TestRunningProcessesAreAvoided(t *testing.T) {
	t.Parallel()
	a := &idAllocator{stateDir: t.TempDir(), hostFiles: fakeEtc(nil)}
	start := idPoolStart + idSearchStart(a.stateDir)*IDRangeSize
	// A process of another proxy's silo runs with an id in the first block
	// this state_dir would pick.
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	status := "Name:\tpostgres\nUid:\t" + strconv.FormatUint(start+1000, 10) + "\t" + strconv.FormatUint(start+1000, 10) + "\t0\t0\nGid:\t5\t5\t5\t5\n"
	if err := os.WriteFile(filepath.Join(proc, "4242", "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(proc, "self"), 0o755) // not a pid: ignored
	spans := runningIDSpans(proc)
	if len(spans) != 3 {
		t.Errorf("runningIDSpans = %+v, want uid %d, 0 and gid 5", spans, start+1000)
	}
	a.procRoot = proc
	r, err := a.rangeFor("sales")
	if err != nil {
		t.Fatal(err)
	}
	if uint64(r.HostID) != start+IDRangeSize {
		t.Errorf("got %d, want %d: the block of the running process is skipped", r.HostID, start+IDRangeSize)
	}
}

func TestParseIDDatabase(t *testing.T) {
	t.Parallel()
	passwd := "root:x:0:0:root:/root:/bin/bash\n# comment\n+nis\nbig:x:1048600:1048601::/:/bin/sh\nbad:x:notanumber:alsonot\n"
	group := "root:x:0:\nbig:x:1200000:\n"
	subid := "alice:100000:65536\nbob:1114112:65536\nbroken:1\n"
	spans := parseIDDatabase("passwd", "/etc/passwd", []byte(passwd))
	spans = append(spans, parseIDDatabase("group", "/etc/group", []byte(group))...)
	spans = append(spans, parseIDDatabase("subid", "/etc/subuid", []byte(subid))...)
	has := func(start, end uint64) bool {
		for _, s := range spans {
			if s.start == start && s.end == end {
				return true
			}
		}
		return false
	}
	for _, w := range []struct{ start, end uint64 }{
		{0, 1}, {1048600, 1048601}, {1048601, 1048602}, {1200000, 1200001}, {100000, 165536}, {1114112, 1179648},
	} {
		if !has(w.start, w.end) {
			t.Errorf("span [%d,%d) missing from %+v", w.start, w.end, spans)
		}
	}
	if has(1, 2) {
		t.Errorf("the unparsable ids of 'bad' yielded a span: %+v", spans)
	}
	for _, s := range spans {
		if s.start == 1048600 && !strings.Contains(s.owner, "/etc/passwd:4 (big)") {
			t.Errorf("owner of big's uid = %q, want it to name the file, line and user", s.owner)
		}
	}
}

func newTestAllocator(t *testing.T, etc map[string]string) *idAllocator {
	t.Helper()
	return &idAllocator{stateDir: t.TempDir(), hostFiles: fakeEtc(etc)}
}

func TestIDAllocatorPersistsAndAvoidsOthers(t *testing.T) {
	t.Parallel()
	a := &idAllocator{stateDir: t.TempDir()}
	start := uint64(idPoolStart) + idSearchStart(a.stateDir)*IDRangeSize
	// A host user sits in the block the search starts at, and a
	// subordinate range covers the next one.
	a.hostFiles = fakeEtc(map[string]string{
		"/etc/passwd": "svc:x:" + strconv.FormatUint(start+100, 10) + ":" + strconv.FormatUint(start+100, 10) + "::/:/bin/false\n",
		"/etc/subuid": "alice:" + strconv.FormatUint(start+IDRangeSize, 10) + ":65536\n",
	})
	first, err := a.rangeFor("sales")
	if err != nil {
		t.Fatal(err)
	}
	if uint64(first.HostID) != start+2*IDRangeSize {
		t.Errorf("first silo got %d, want %d (the first two blocks searched are used by the host)", first.HostID, start+2*IDRangeSize)
	}
	second, err := a.rangeFor("default")
	if err != nil {
		t.Fatal(err)
	}
	if second.HostID == first.HostID || second.overlaps(idSpan{start: uint64(first.HostID), end: first.end()}) {
		t.Errorf("second silo's range %+v overlaps the first's %+v", second, first)
	}
	again, err := a.rangeFor("sales")
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Errorf("sales range changed across calls: %+v then %+v", first, again)
	}
	// A new allocator on the same state_dir (a proxy restart) finds the
	// recorded ranges, even though the host now has a user in one of them.
	b := &idAllocator{stateDir: a.stateDir, hostFiles: fakeEtc(map[string]string{
		"/etc/passwd": "late:x:" + strconv.Itoa(first.HostUID(5)) + ":0::/:/bin/false\n",
	})}
	restarted, err := b.rangeFor("sales")
	if err != nil {
		t.Fatal(err)
	}
	if restarted != first {
		t.Errorf("after restart sales has %+v, want the recorded %+v", restarted, first)
	}
	third, err := b.rangeFor("reports")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []IDRange{first, second} {
		if third.overlaps(idSpan{start: uint64(r.HostID), end: r.end()}) {
			t.Errorf("third range %+v overlaps recorded %+v", third, r)
		}
	}
	st, err := os.Stat(a.idmapPath("sales"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("idmap mode = %v, want 0644", st.Mode().Perm())
	}
}

func TestIDMapFileValidation(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"not json":       "host_id=1048576\n",
		"truncated":      `{"host_id":1048576,`,
		"wrong size":     `{"host_id":1048576,"size":1000}`,
		"root":           `{"host_id":0,"size":65536}`,
		"overflow":       `{"host_id":4294967000,"size":65536}`,
		"unknown field":  `{"host_id":1048576,"size":65536,"owner":"x"}`,
		"trailing data":  `{"host_id":1048576,"size":65536} {}`,
		"negative":       `{"host_id":-5,"size":65536}`,
		"empty file":     ``,
		"string host id": `{"host_id":"1048576","size":65536}`,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := newTestAllocator(t, nil)
			p := a.idmapPath("sales")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := a.rangeFor("sales")
			var ie *IDMapError
			if !errors.As(err, &ie) {
				t.Fatalf("rangeFor with idmap %q = %+v, %v; want an *IDMapError", content, r, err)
			}
			if ie.Path != p {
				t.Errorf("IDMapError.Path = %q, want %q", ie.Path, p)
			}
			// A corrupt file is never replaced behind the operator's back.
			b, _ := os.ReadFile(p)
			if string(b) != content {
				t.Errorf("idmap rewritten to %q", b)
			}
			// Other silos cannot allocate either: the corrupt file's range
			// is unknown, so any new range might overlap it.
			if r, err := a.rangeFor("other"); err == nil {
				t.Errorf("allocation beside a corrupt idmap succeeded: %+v", r)
			}
		})
	}
}

func TestIDMapOverlapRejected(t *testing.T) {
	t.Parallel()
	a := newTestAllocator(t, nil)
	for _, s := range []string{"a", "b"} {
		p := a.idmapPath(s)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		// Both record the same block: a copied state directory.
		if err := writeIDRange(p, IDRange{HostID: idPoolStart, Size: IDRangeSize}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.rangeFor("a")
	if err == nil || !strings.Contains(err.Error(), "overlap") || !strings.Contains(err.Error(), "silo b") {
		t.Fatalf("rangeFor with overlapping idmaps = %v, want an overlap error naming silo b", err)
	}
}
