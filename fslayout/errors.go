package fslayout

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoInstall is returned by FindInstall when bindir is "auto" and neither
// pg_config nor /usr/lib/postgresql/*/bin yields a server installation.
var ErrNoInstall = errors.New("no PostgreSQL server installation found")

// ErrNotExecutable marks a file that exists but cannot be executed, so the
// silo could not start it either.
var ErrNotExecutable = errors.New("not an executable regular file")

// ErrNotELF marks a file that is not an ELF object where one is required.
var ErrNotELF = errors.New("not an ELF file")

// InstallError says which part of a PostgreSQL installation is missing or
// unusable. What names the part ("postgres", "initdb", "pkglibdir",
// "sharedir", "version") so that `silo-proxy check` can tell the operator
// which package to install.
type InstallError struct {
	BinDir string
	What   string
	Path   string
	Err    error
}

func (e *InstallError) Error() string {
	if e.Path != "" {
		return fmt.Sprintf("postgres installation %s: %s %s: %v", e.BinDir, e.What, e.Path, e.Err)
	}
	return fmt.Sprintf("postgres installation %s: %s: %v", e.BinDir, e.What, e.Err)
}

func (e *InstallError) Unwrap() error { return e.Err }

// UnresolvedError is a DT_NEEDED entry (or program interpreter) that the
// dynamic loader would not find on this host: the object would fail to load
// inside the silo exactly as it would outside.
type UnresolvedError struct {
	// Object is the ELF file that needs the library.
	Object string
	// Needed is the DT_NEEDED name, or the PT_INTERP path.
	Needed string
	// Searched lists the directories tried, in the loader's order.
	Searched []string
}

func (e *UnresolvedError) Error() string {
	if len(e.Searched) == 0 {
		return fmt.Sprintf("%s: needs %s, which does not exist", e.Object, e.Needed)
	}
	return fmt.Sprintf("%s: needs %s, not found in ld.so.cache or %s", e.Object, e.Needed, strings.Join(e.Searched, ":"))
}

// ELFError is a file of an ELF closure that could not be read or parsed.
type ELFError struct {
	Path string
	Err  error
}

func (e *ELFError) Error() string { return fmt.Sprintf("elf %s: %v", e.Path, e.Err) }
func (e *ELFError) Unwrap() error { return e.Err }

// SourceError is a plan operation whose host source does not exist (or is
// of the wrong type), named with the op's Origin so the operator can find
// the line of configuration that asked for it.
type SourceError struct {
	Source string
	Target string
	Origin string
	Err    error
}

func (e *SourceError) Error() string {
	return fmt.Sprintf("%s: source %s (for %s): %v", e.Origin, e.Source, e.Target, e.Err)
}

func (e *SourceError) Unwrap() error { return e.Err }

// MountPointError is an operation whose target cannot be created inside the
// silo's root: its parent is a bind mount (the executor must not create
// directories in a host tree, and cannot in a read-only one), a file, a
// symlink, or a path reserved for the silo itself.
type MountPointError struct {
	Target string
	Origin string
	// Under is the target of the op that makes Target impossible.
	Under  string
	Reason string
}

func (e *MountPointError) Error() string {
	if e.Under != "" {
		return fmt.Sprintf("%s: target %s: %s (under %s)", e.Origin, e.Target, e.Reason, e.Under)
	}
	return fmt.Sprintf("%s: target %s: %s", e.Origin, e.Target, e.Reason)
}

// ShellError is a shell found in a plan that must not have one (minimal
// without Bootstrap): with a shell, COPY ... PROGRAM would run commands.
type ShellError struct {
	Path   string
	Origin string
}

func (e *ShellError) Error() string {
	return fmt.Sprintf("%s: %s is a shell, which layout minimal must not contain", e.Origin, e.Path)
}

// CacheFormatError is an ld.so.cache file that is not in the
// "glibc-ld.so.cache1.1" format or whose tables point outside the file.
type CacheFormatError struct {
	Offset int
	Reason string
}

func (e *CacheFormatError) Error() string {
	return fmt.Sprintf("ld.so.cache: offset %d: %s", e.Offset, e.Reason)
}
