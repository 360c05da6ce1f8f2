package spawner

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A silo's user namespace maps namespace ids 0..65535 to a block of host
// ids of the same size, used for both uids and gids. Blocks come from a
// pool that starts at 2^20 (1048576), far above the ids distributions give
// to users (below 60000) and the subordinate ranges useradd hands out by
// default (100000 + 65536·n for the first few users). Every allocation is
// checked against /etc/passwd, /etc/group, /etc/subuid and /etc/subgid,
// against the blocks recorded for the other silos of the same state_dir,
// and against the uids of running processes (which catches the silos of
// another silo-proxy with another state_dir).
//
// The search starts at a block chosen by a hash of the state_dir, not at
// the bottom of the pool, so that two proxy instances on one host (or
// parallel test runs) do not both begin with the same block; a state_dir's
// silos still get neighbouring blocks. Once recorded in
// <state_dir>/silos/<name>/idmap, a silo's block never changes.
const (
	// IDRangeSize is the number of ids mapped into every silo: a full
	// 16-bit range, so any uid a program inside may pick is mapped.
	IDRangeSize = 65536
	// idPoolStart is the first host id the pool hands out.
	idPoolStart = 1 << 20
	// idPoolEnd is the first host id the pool never reaches: (uid_t)-1 is
	// invalid and the kernel's overflow ids live at 65534 only, so the top
	// block simply stops short of 2^32-1.
	idPoolEnd = 1<<32 - 1
)

// IDRange is a silo's block of host ids: namespace id n is host id
// HostID+n, for n below Size.
type IDRange struct {
	HostID uint32 `json:"host_id"`
	Size   uint32 `json:"size"`
}

// HostUID returns the host id of namespace id n.
func (r IDRange) HostUID(n int) int { return int(r.HostID) + n }

func (r IDRange) end() uint64 { return uint64(r.HostID) + uint64(r.Size) }

func (r IDRange) overlaps(s idSpan) bool {
	return uint64(r.HostID) < s.end && s.start < r.end()
}

func (r IDRange) validate() error {
	if r.Size != IDRangeSize {
		return fmt.Errorf("size %d, want %d", r.Size, IDRangeSize)
	}
	if r.HostID == 0 {
		return errors.New("host_id 0 would map the silo's root to the host's root")
	}
	if r.end() > idPoolEnd {
		return fmt.Errorf("host_id %d + size %d passes the largest valid id", r.HostID, r.Size)
	}
	return nil
}

// idSpan is a half-open interval [start, end) of host ids in use.
type idSpan struct {
	start, end uint64
	owner      string // who holds it, for error messages
}

// IDMapError reports an idmap file that cannot be trusted. The proxy never
// silently replaces such a file: the silo's data directory is owned by ids
// of the recorded range, and a new range would lock the postmaster out of
// its own data, or worse, hand it another silo's.
type IDMapError struct {
	Path string
	Err  error
}

func (e *IDMapError) Error() string {
	return "idmap " + e.Path + ": " + e.Err.Error() + " (fix or restore the file; the silo's data directory is owned by the range it recorded)"
}

func (e *IDMapError) Unwrap() error { return e.Err }

// readIDRange reads and validates a persisted idmap file.
func readIDRange(path string) (IDRange, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return IDRange{}, err
	}
	return parseIDRange(path, data)
}

func parseIDRange(path string, data []byte) (IDRange, error) {
	var r IDRange
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return IDRange{}, &IDMapError{Path: path, Err: err}
	}
	if dec.More() {
		return IDRange{}, &IDMapError{Path: path, Err: errors.New("trailing data")}
	}
	if err := r.validate(); err != nil {
		return IDRange{}, &IDMapError{Path: path, Err: err}
	}
	return r, nil
}

// writeIDRange persists r atomically: a crash leaves either no file or a
// complete one, never a truncated range.
func writeIDRange(path string, r IDRange) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o644)
}

// writeFileAtomic writes data to a temporary file next to path, syncs it
// and renames it into place, then syncs the directory.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// idPoolBlocks is the number of blocks in the pool.
const idPoolBlocks = (idPoolEnd - idPoolStart) / IDRangeSize

// idSearchStart picks the pool block where the search for a state_dir's
// new blocks begins: one of the first half of the pool, by FNV-1a of the
// state_dir's path.
func idSearchStart(stateDir string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(filepath.Clean(stateDir)))
	return h.Sum64() % (idPoolBlocks / 2)
}

// allocateIDRange returns the first free block of the pool, searching
// upwards from block index first and wrapping around, that overlaps none
// of taken.
func allocateIDRange(taken []idSpan, first uint64) (IDRange, error) {
	for i := uint64(0); i < idPoolBlocks; i++ {
		base := idPoolStart + ((first+i)%idPoolBlocks)*IDRangeSize
		r := IDRange{HostID: uint32(base), Size: IDRangeSize}
		free := true
		for _, s := range taken {
			if r.overlaps(s) {
				free = false
				break
			}
		}
		if free {
			return r, nil
		}
	}
	return IDRange{}, errors.New("no free block of 65536 host ids left in the pool")
}

// runningIDSpans returns the real and effective uids and gids of every
// process on the host (read from procRoot, /proc outside tests).
func runningIDSpans(procRoot string) []idSpan {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	seen := map[uint64]bool{}
	var out []idSpan
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || (k != "Uid" && k != "Gid") {
				continue
			}
			for _, f := range strings.Fields(v) {
				id, err := strconv.ParseUint(f, 10, 32)
				if err != nil || seen[id] {
					continue
				}
				seen[id] = true
				out = append(out, idSpan{start: id, end: id + 1, owner: "running process " + e.Name()})
			}
		}
	}
	return out
}

// parseIDDatabase extracts the ids in use from the text of /etc/passwd
// (field 3 uid, field 4 gid), /etc/group (field 3 gid) or /etc/subuid and
// /etc/subgid (fields 2 and 3: start and count). Lines that do not parse
// (comments, NIS "+" entries) are skipped: they name no id.
func parseIDDatabase(kind, name string, data []byte) []idSpan {
	var out []idSpan
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Split(text, ":")
		owner := fmt.Sprintf("%s:%d (%s)", name, line, f[0])
		single := func(s string) {
			if v, err := strconv.ParseUint(s, 10, 32); err == nil {
				out = append(out, idSpan{start: v, end: v + 1, owner: owner})
			}
		}
		switch kind {
		case "passwd":
			if len(f) >= 4 {
				single(f[2])
				single(f[3])
			}
		case "group":
			if len(f) >= 3 {
				single(f[2])
			}
		case "subid":
			if len(f) >= 3 {
				start, err1 := strconv.ParseUint(f[1], 10, 32)
				count, err2 := strconv.ParseUint(f[2], 10, 32)
				if err1 == nil && err2 == nil && count > 0 {
					out = append(out, idSpan{start: start, end: start + count, owner: owner})
				}
			}
		}
	}
	return out
}

// hostIDFiles are the id databases consulted before a block is handed out.
var hostIDFiles = []struct{ path, kind string }{
	{"/etc/passwd", "passwd"},
	{"/etc/group", "group"},
	{"/etc/subuid", "subid"},
	{"/etc/subgid", "subid"},
}

// hostIDSpans reads the ids the host's user databases use. Missing files
// are fine (no /etc/subuid on many systems); unreadable ones are not.
func hostIDSpans(etc func(path string) ([]byte, error)) ([]idSpan, error) {
	var out []idSpan
	for _, f := range hostIDFiles {
		data, err := etc(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, parseIDDatabase(f.kind, f.path, data)...)
	}
	return out, nil
}

// idAllocator hands out and remembers silo id blocks under a state_dir.
// Callers serialise calls (the Manager holds its lock).
type idAllocator struct {
	stateDir string
	// hostFiles reads a host id database; os.ReadFile outside tests.
	hostFiles func(path string) ([]byte, error)
	// procRoot is where running processes are listed; "" skips that check.
	procRoot string
}

func (a *idAllocator) idmapPath(silo string) string {
	return filepath.Join(a.stateDir, "silos", silo, "idmap")
}

// recorded returns the blocks recorded for every silo under the state_dir
// except skip.
func (a *idAllocator) recorded(skip string) ([]idSpan, error) {
	entries, err := os.ReadDir(filepath.Join(a.stateDir, "silos"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []idSpan
	for _, e := range entries {
		if !e.IsDir() || e.Name() == skip {
			continue
		}
		p := a.idmapPath(e.Name())
		r, err := readIDRange(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, idSpan{start: uint64(r.HostID), end: r.end(), owner: "silo " + e.Name()})
	}
	return out, nil
}

// rangeFor returns the silo's recorded block, allocating and persisting a
// new one on first use. A recorded block that overlaps another silo's is
// an error: two silos sharing host ids could reach each other's files.
func (a *idAllocator) rangeFor(silo string) (IDRange, error) {
	others, err := a.recorded(silo)
	if err != nil {
		return IDRange{}, err
	}
	p := a.idmapPath(silo)
	r, err := readIDRange(p)
	switch {
	case err == nil:
		for _, o := range others {
			if r.overlaps(o) {
				return IDRange{}, &IDMapError{Path: p, Err: fmt.Errorf("host ids %d-%d overlap those of %s", r.HostID, r.end()-1, o.owner)}
			}
		}
		return r, nil
	case !errors.Is(err, fs.ErrNotExist):
		return IDRange{}, err
	}
	host, err := hostIDSpans(a.hostFiles)
	if err != nil {
		return IDRange{}, fmt.Errorf("reading host id databases: %w", err)
	}
	taken := append(others, host...)
	if a.procRoot != "" {
		taken = append(taken, runningIDSpans(a.procRoot)...)
	}
	r, err = allocateIDRange(taken, idSearchStart(a.stateDir))
	if err != nil {
		return IDRange{}, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o711); err != nil {
		return IDRange{}, err
	}
	if err := writeIDRange(p, r); err != nil {
		return IDRange{}, fmt.Errorf("recording the id range of silo %s: %w", silo, err)
	}
	return r, nil
}
