package fslayout

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
)

// maxSymlinks bounds symlink expansion as the kernel's MAXSYMLINKS (40).
const maxSymlinks = 40

var (
	errNotDir = errors.New("not a directory")
	errLoop   = errors.New("too many levels of symbolic links")
)

// Resolution is where a path inside the silo leads.
type Resolution struct {
	// Path is the silo path after following every symlink.
	Path string
	// HostPath is the host file or directory backing Path, when a bind
	// (or dev node) provides it; empty for tmpfs, proc and generated files.
	HostPath string
	// Op is the op that provides Path, or the mount it lies in; the zero
	// MountOp for directories of the root tmpfs.
	Op MountOp
}

// Resolve follows path inside the root this plan builds, as the kernel
// would once the executor has run it: later mounts hide earlier ones at
// and below their target, symlinks of the plan and of bound host trees are
// followed (absolute ones from the silo's root), and a directory of the
// root tmpfs exists only if some op creates something below it. It reads
// the host only inside bound trees, so it shows exactly what a process in
// the silo can open — the way to check that a loader path works, or that
// no shell is reachable.
func (p Plan) Resolve(silopath string) (Resolution, error) {
	ix := newPlanIndex(p.Ops)
	return ix.resolve(silopath, len(p.Ops))
}

// planIndex finds ops by target.
type planIndex struct {
	ops []MountOp
	at  map[string][]int
}

func newPlanIndex(ops []MountOp) *planIndex {
	ix := &planIndex{ops: ops, at: make(map[string][]int, len(ops))}
	for i, op := range ops {
		ix.at[op.Target] = append(ix.at[op.Target], i)
	}
	return ix
}

// visibleAt returns the last op at target mounted after cover and before
// limit, or -1.
func (ix *planIndex) visibleAt(target string, cover, limit int) int {
	best := -1
	for _, j := range ix.at[target] {
		if j > cover && j < limit {
			best = j
		}
	}
	return best
}

// hasBelow reports whether an op after cover and before limit has a
// target strictly below dir, which makes the executor create dir.
func (ix *planIndex) hasBelow(dir string, cover, limit int) bool {
	prefix := dir + "/"
	if dir == "/" {
		prefix = "/"
	}
	for j := cover + 1; j < limit; j++ {
		if strings.HasPrefix(ix.ops[j].Target, prefix) {
			return true
		}
	}
	return false
}

// hostPath maps silo path p, at or below the bind ops[cover], to the host.
func (ix *planIndex) hostPath(cover int, p string) string {
	op := ix.ops[cover]
	rel := strings.TrimPrefix(p, op.Target)
	return path.Join(op.Source, rel)
}

func splitPath(p string) []string {
	p = path.Clean("/" + p)
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// resolve walks silopath through ops[:limit].
func (ix *planIndex) resolve(silopath string, limit int) (Resolution, error) {
	fail := func(err error) (Resolution, error) {
		return Resolution{}, &fs.PathError{Op: "resolve", Path: silopath, Err: err}
	}
	links := 0
	comps := splitPath(silopath)
restart:
	cur, cover := "/", -1
	for i := 0; i < len(comps); i++ {
		next := path.Join(cur, comps[i])
		last := i == len(comps)-1
		var linkText string
		if j := ix.visibleAt(next, cover, limit); j >= 0 {
			op := ix.ops[j]
			switch op.Kind {
			case OpSymlink:
				linkText = op.Source
			case OpFile:
				if !last {
					return fail(errNotDir)
				}
				return Resolution{Path: next, Op: op}, nil
			case OpDev:
				if !last {
					return fail(errNotDir)
				}
				return Resolution{Path: next, HostPath: op.Source, Op: op}, nil
			case OpProc:
				// Below a fresh proc everything is the kernel's.
				return Resolution{Path: path.Join(append([]string{next}, comps[i+1:]...)...), Op: op}, nil
			default:
				cover = j
			}
		} else if cover >= 0 && ix.ops[cover].Kind == OpBind {
			st, err := os.Lstat(ix.hostPath(cover, next))
			if err != nil {
				var pe *fs.PathError
				if errors.As(err, &pe) {
					err = pe.Err
				}
				return fail(err)
			}
			if st.Mode()&fs.ModeSymlink != 0 {
				if linkText, err = os.Readlink(ix.hostPath(cover, next)); err != nil {
					return fail(err)
				}
			} else if !last && !st.IsDir() {
				return fail(errNotDir)
			}
		} else if !ix.hasBelow(next, cover, limit) {
			return fail(fs.ErrNotExist)
		}
		if linkText != "" {
			links++
			if links > maxSymlinks {
				return fail(errLoop)
			}
			target := linkText
			if !path.IsAbs(target) {
				target = path.Join(cur, target)
			}
			comps = append(splitPath(target), comps[i+1:]...)
			goto restart
		}
		cur = next
	}
	res := Resolution{Path: cur}
	if cover >= 0 {
		res.Op = ix.ops[cover]
		if res.Op.Kind == OpBind {
			res.HostPath = ix.hostPath(cover, cur)
		}
	}
	return res, nil
}
