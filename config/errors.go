package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration, located precisely enough
// that an operator can go straight to it.
type Problem struct {
	// File is the file the problem is in: the config file as it was named
	// to Load, or a custom_fs_layout or whitelist file.
	File string
	// Line is 1-based; 0 when the problem concerns the file as a whole.
	Line int
	// Key is the key path in the YAML ("silos[1].mounts[0].target") or the
	// column of a pgSilo-format line ("DEST"); empty when the whole line is
	// at fault.
	Key     string
	Message string
}

// String renders the problem as `FILE:LINE: KEY: MESSAGE`, leaving out the
// parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// ValidationError reports every problem found in a configuration, not just
// the first, so that one run of `silo-proxy check` is enough to fix a file.
type ValidationError struct {
	Problems []Problem
}

// Error prints one line per problem, in the order of sortProblems.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems accumulates Problems while a configuration is decoded.
type problems struct {
	// primary is the file whose problems sort first: the config file itself.
	primary string
	list    []Problem
}

func (ps *problems) add(file string, line int, key, format string, args ...any) {
	ps.list = append(ps.list, Problem{File: file, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
}

func (ps *problems) addAll(more []Problem) {
	ps.list = append(ps.list, more...)
}

// err returns nil when nothing was found, else a *ValidationError holding
// the problems sorted and without duplicates (a whitelist shared by two
// silos is checked twice but reported once).
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return &ValidationError{Problems: sortProblems(ps.primary, ps.list)}
}

// sortProblems orders problems by file (the primary file first, then by
// name) and line, keeping the order of discovery among equals, and drops
// exact duplicates.
func sortProblems(primary string, list []Problem) []Problem {
	out := make([]Problem, len(list))
	copy(out, list)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.File != b.File {
			if a.File == primary || b.File == primary {
				return a.File == primary
			}
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	seen := make(map[Problem]bool, len(out))
	uniq := out[:0]
	for _, p := range out {
		if !seen[p] {
			seen[p] = true
			uniq = append(uniq, p)
		}
	}
	return uniq
}
