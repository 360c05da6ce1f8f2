package config

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// This file reads the two line-oriented formats silo-proxy inherits from
// pgSilo (DESIGN.md §3):
//
//	custom_fs_layout:  DBNAME /path/to/whitelist     ("Default" = catch-all)
//	whitelist:         SOURCE DEST ro|rw
//
// Fields are separated by blanks. A field that starts with '#' begins a
// comment that runs to the end of the line; since every path must be
// absolute, no real field can start with '#'. Blank lines are ignored.
// pgSilo resolved nothing relative to anything, so relative paths are
// errors rather than guesses.

// maxPgSiloFile bounds how much of a layout or whitelist file is read. Real
// files are a few hundred bytes; the bound keeps a path pointing somewhere
// unexpected (a huge log, /proc) from exhausting memory during a reload.
const maxPgSiloFile = 1 << 20

// DefaultLayoutName is the pgSilo keyword (matched in any case) for the
// catch-all line of a custom_fs_layout file.
const DefaultLayoutName = "Default"

// DefaultSiloName is the name given to the silo made from a custom_fs_layout
// Default line.
const DefaultSiloName = "default"

// LayoutEntry is one line of a pgSilo custom_fs_layout file.
type LayoutEntry struct {
	// Database is the database the line assigns; empty when Default is set.
	Database string
	// Default marks the catch-all line.
	Default bool
	// Whitelist is the absolute, cleaned path of the whitelist file.
	Whitelist string
	// Line is the 1-based line number in the layout file.
	Line int
}

// ParseLayoutFile reads and parses a custom_fs_layout file. A malformed file
// yields a *ValidationError listing every bad line.
func ParseLayoutFile(path string) ([]LayoutEntry, error) {
	data, err := readPgSiloFile(path)
	if err != nil {
		return nil, err
	}
	return ParseLayout(data, path)
}

// ParseLayout parses the contents of a custom_fs_layout file; name is used
// in problem reports only.
func ParseLayout(data []byte, name string) ([]LayoutEntry, error) {
	entries, probs := parseLayout(data, name)
	if len(probs) > 0 {
		return entries, &ValidationError{Problems: sortProblems(name, probs)}
	}
	return entries, nil
}

// ParseWhitelist reads and parses a pgSilo whitelist file into mounts whose
// Origin is "PATH:LINE". Sources are cleaned; targets are returned as
// written, because cleaning "/../x" would hide that it climbs out of the
// silo root: Load cleans them and rejects escapes and reserved targets.
func ParseWhitelist(path string) ([]Mount, error) {
	data, err := readPgSiloFile(path)
	if err != nil {
		return nil, err
	}
	return ParseWhitelistData(data, path)
}

// ParseWhitelistData parses the contents of a whitelist file; name is used
// in Origins and problem reports.
func ParseWhitelistData(data []byte, name string) ([]Mount, error) {
	lines, probs := parseWhitelist(data, name)
	mounts := make([]Mount, len(lines))
	for i, l := range lines {
		mounts[i] = l.Mount
	}
	if len(probs) > 0 {
		return mounts, &ValidationError{Problems: sortProblems(name, probs)}
	}
	return mounts, nil
}

// readPgSiloFile reads a layout or whitelist file, refusing anything but a
// regular file of reasonable size. Opening a FIFO would block and reading a
// device could never end, so the type is checked before opening and again
// on the open descriptor.
func readPgSiloFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: is a %s, not a regular file", path, fileKind(fi.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: is a %s, not a regular file", path, fileKind(fi.Mode()))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPgSiloFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPgSiloFile {
		return nil, fmt.Errorf("%s: larger than %d bytes; not a pgSilo file", path, maxPgSiloFile)
	}
	return data, nil
}

// pgSiloLines splits data into lines and each line into fields, dropping
// comments. It calls fn for every line that has at least one field.
func pgSiloLines(data []byte, fn func(line int, fields []string)) {
	for i, raw := range bytes.Split(data, []byte("\n")) {
		fields := strings.Fields(string(raw))
		for j, f := range fields {
			if strings.HasPrefix(f, "#") {
				fields = fields[:j]
				break
			}
		}
		if len(fields) > 0 {
			fn(i+1, fields)
		}
	}
}

func parseLayout(data []byte, name string) ([]LayoutEntry, []Problem) {
	var (
		entries []LayoutEntry
		probs   []Problem
		seen    = map[string]int{} // database (or "" for Default) -> line
	)
	bad := func(line int, key, format string, args ...any) {
		probs = append(probs, Problem{File: name, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
	}
	pgSiloLines(data, func(line int, f []string) {
		switch {
		case len(f) < 2:
			bad(line, "WHITELIST", "missing: a layout line is `DBNAME /path/to/whitelist`")
			return
		case len(f) > 2:
			bad(line, "", "extra field %q: a layout line is `DBNAME /path/to/whitelist`", f[2])
			return
		}
		e := LayoutEntry{Line: line}
		ok := true
		if strings.EqualFold(f[0], DefaultLayoutName) {
			e.Default = true
		} else if msg := databaseNameProblem(f[0]); msg != "" {
			bad(line, "DBNAME", "%s", msg)
			ok = false
		} else if f[0] == CatchAll {
			bad(line, "DBNAME", "%q is not a database name; the catch-all line is written %s", f[0], DefaultLayoutName)
			ok = false
		} else {
			e.Database = f[0]
		}
		if msg := absPathProblem(f[1]); msg != "" {
			bad(line, "WHITELIST", "%s", msg)
			ok = false
		} else {
			e.Whitelist = filepath.Clean(f[1])
		}
		if !ok {
			return
		}
		key := e.Database
		if prev, dup := seen[key]; dup {
			if e.Default {
				bad(line, "DBNAME", "second %s line; the catch-all is already given at line %d", f[0], prev)
			} else {
				bad(line, "DBNAME", "database %q already listed at line %d", e.Database, prev)
			}
			return
		}
		seen[key] = line
		entries = append(entries, e)
	})
	return entries, probs
}

// whitelistLine is a parsed whitelist line, kept with its line number so
// that later checks (source exists, target not reserved) can point at it.
type whitelistLine struct {
	Mount
	Line int
}

func parseWhitelist(data []byte, name string) ([]whitelistLine, []Problem) {
	var (
		lines []whitelistLine
		probs []Problem
	)
	bad := func(line int, key, format string, args ...any) {
		probs = append(probs, Problem{File: name, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
	}
	const shape = "a whitelist line is `SOURCE DEST ro|rw`"
	pgSiloLines(data, func(line int, f []string) {
		switch len(f) {
		case 1:
			bad(line, "DEST", "missing: %s", shape)
			return
		case 2:
			bad(line, "MODE", "missing: %s", shape)
			return
		case 3:
		default:
			bad(line, "", "extra field %q: %s", f[3], shape)
			return
		}
		ok := true
		if msg := absPathProblem(f[0]); msg != "" {
			bad(line, "SOURCE", "%s", msg)
			ok = false
		}
		if msg := absPathProblem(f[1]); msg != "" {
			bad(line, "DEST", "%s", msg)
			ok = false
		}
		mode := MountMode(f[2])
		if mode != MountRO && mode != MountRW {
			bad(line, "MODE", "%q is not ro or rw", f[2])
			ok = false
		}
		if !ok {
			return
		}
		lines = append(lines, whitelistLine{
			Mount: Mount{
				Source: filepath.Clean(f[0]),
				Target: f[1], // cleaned by the mount checks, which also catch ".." escapes
				Mode:   mode,
				Origin: name + ":" + strconv.Itoa(line),
			},
			Line: line,
		})
	})
	return lines, probs
}

// absPathProblem explains why p cannot be used as a path in a pgSilo file or
// a mount, or returns "".
func absPathProblem(p string) string {
	switch {
	case p == "":
		return "empty path"
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Sprintf("%q contains a NUL byte", p)
	case !filepath.IsAbs(p):
		return fmt.Sprintf("%q is a relative path; it must be absolute", p)
	}
	return ""
}

// maxIdentifierLen mirrors PostgreSQL's NAMEDATALEN-1: the server truncates
// longer database names in the startup packet, so a longer name in the
// config could never be routed to.
const maxIdentifierLen = 63

// databaseNameProblem explains why db cannot be a database name, or
// returns "".
func databaseNameProblem(db string) string {
	switch {
	case db == "":
		return "empty database name"
	case strings.IndexByte(db, 0) >= 0:
		return fmt.Sprintf("database name %q contains a NUL byte", db)
	case len(db) > maxIdentifierLen:
		return fmt.Sprintf("database name %q is longer than %d bytes; PostgreSQL truncates names to NAMEDATALEN-1, so it could never be routed", db, maxIdentifierLen)
	}
	return ""
}
