// Package fslayout computes what a silo sees: an ordered mount plan built by
// pure functions from the silo's layout, its whitelist and the PostgreSQL
// installation, testable without root. The Linux executor that carries a plan
// out inside silo-init lives in the *_linux.go files.
package fslayout

import (
	"fmt"
	"io/fs"
	"strings"
)

// Fixed paths inside every silo.
const (
	// DataTarget is where the silo's data directory appears.
	DataTarget = "/var/lib/postgresql/data"
	// SocketTarget is the postmaster's unix_socket_directories inside the
	// silo; the host side is <state_dir>/silos/<name>/run.
	SocketTarget = "/run/postgresql"
	// PostgresUID and PostgresGID are the in-namespace ids the postmaster
	// runs as. In privileged mode they map to host id_base+1000.
	PostgresUID = 1000
	PostgresGID = 1000
	// PostgresUser is the name of the silo user in the generated /etc/passwd.
	PostgresUser = "postgres"
)

// OpKind is the kind of one plan operation.
type OpKind uint8

const (
	// OpBind bind-mounts the host path Source onto Target; ReadOnly adds the
	// MS_REMOUNT|MS_BIND|MS_RDONLY pass that a first bind ignores.
	OpBind OpKind = iota + 1
	// OpTmpfs mounts a fresh tmpfs at Target with options Data.
	OpTmpfs
	// OpProc mounts a fresh proc at Target.
	OpProc
	// OpDev bind-mounts the host device node Source onto Target (a user
	// namespace cannot mknod).
	OpDev
	// OpFile writes Content to Target with permissions Mode.
	OpFile
	// OpSymlink creates Target as a symlink whose text is Source.
	OpSymlink
	// OpDir creates the directory Target with permissions Mode.
	OpDir
)

func (k OpKind) String() string {
	switch k {
	case OpBind:
		return "bind"
	case OpTmpfs:
		return "tmpfs"
	case OpProc:
		return "proc"
	case OpDev:
		return "dev"
	case OpFile:
		return "file"
	case OpSymlink:
		return "symlink"
	case OpDir:
		return "dir"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// OpFlags are mount flags an op asks for beyond ReadOnly. They are
// kernel MS_* flags, not filesystem options, so they cannot travel in Data
// (tmpfs rejects "nosuid" as an unknown parameter).
type OpFlags uint8

const (
	// NoSuid is MS_NOSUID.
	NoSuid OpFlags = 1 << iota
	// NoDev is MS_NODEV.
	NoDev
	// NoExec is MS_NOEXEC.
	NoExec
)

func (f OpFlags) String() string {
	var words []string
	if f&NoSuid != 0 {
		words = append(words, "nosuid")
	}
	if f&NoDev != 0 {
		words = append(words, "nodev")
	}
	if f&NoExec != 0 {
		words = append(words, "noexec")
	}
	return strings.Join(words, ",")
}

// MountOp is one step of a plan. Target is always an absolute, clean path
// inside the silo's root.
type MountOp struct {
	Kind     OpKind
	Source   string
	Target   string
	ReadOnly bool
	Data     string
	Content  []byte
	Mode     fs.FileMode
	// Origin says why the op is in the plan (e.g. "layout minimal: bindir",
	// "config.yaml:14"), so an executor failure can name the mount's origin.
	Origin string
	// Flags are applied with the mount (binds: with the read-only remount
	// pass; tmpfs and proc: at mount time).
	Flags OpFlags
}

// Plan is the ordered list of operations that builds a silo's root.
//
// Ops run top-down inside an empty tmpfs root. Before each op the executor
// creates the missing parent directories of Target (mode 0755) and, for
// OpBind and OpDev, the mount point itself: a directory when Source is a
// directory, an empty file otherwise. Build guarantees that no such
// creation happens inside a bind mount (the mount point must already exist
// in its source tree) or through a symlink of the plan.
type Plan struct {
	Ops []MountOp
	// Notes record what Build left out and why (e.g. a module of pkglibdir
	// whose libraries this host lacks). `silo-proxy layout` prints them as
	// comments.
	Notes []string
}

// modeWord is the last column of a printed plan line.
func (op MountOp) modeWord() string {
	switch op.Kind {
	case OpBind:
		if op.ReadOnly {
			return "ro"
		}
		return "rw"
	case OpTmpfs:
		return "tmpfs"
	case OpProc:
		return "proc"
	case OpDev:
		return "dev"
	case OpFile:
		return "file"
	case OpSymlink:
		return "symlink"
	case OpDir:
		return "dir"
	}
	return op.Kind.String()
}

// String renders the op as `SOURCE -> TARGET MODE`, the line format of
// `silo-proxy layout`.
func (op MountOp) String() string {
	src := op.Source
	switch op.Kind {
	case OpTmpfs:
		src = "tmpfs"
	case OpProc:
		src = "proc"
	case OpFile:
		src = "(generated)"
	case OpDir:
		src = "(dir)"
	}
	return src + " -> " + op.Target + " " + op.modeWord()
}

// String renders the whole plan, one op per line.
func (p Plan) String() string {
	var b strings.Builder
	for _, op := range p.Ops {
		b.WriteString(op.String())
		b.WriteByte('\n')
	}
	return b.String()
}
