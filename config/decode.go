package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The configuration is decoded by walking yaml.v3's node tree rather than
// by yaml.Unmarshal into structs: only the node tree keeps the line of every
// key and value, lets one pass collect every problem instead of stopping at
// the first, and tells an absent key (inherit the default) from an explicit
// one.

// maxAliases bounds alias dereferences. The node tree keeps aliases
// unexpanded and the decoder expands them as it walks, so without a bound a
// few lines of nested aliases (or an anchor that contains its own alias)
// would make a reload walk forever.
const maxAliases = 1000

// decoder walks one config file's node tree, collecting problems.
type decoder struct {
	file    string // the config file as named by the caller, for messages
	dir     string // directory relative paths are resolved against
	probs   *problems
	aliases int
	// stateDir is the resolved state_dir, decoded before any mount so that
	// mount sources can be kept out of it.
	stateDir string
	// whitelists caches parsed whitelist files by path, so a file shared by
	// several silos is read once.
	whitelists map[string]*whitelistResult
}

// whitelistResult is a parsed whitelist file, or why it could not be read.
type whitelistResult struct {
	lines   []whitelistLine
	probs   []Problem
	readErr error
}

// field is one key: value pair of a mapping.
type field struct {
	key, val *yaml.Node
	path     string // key path, e.g. "silos[1].limits.memory"
}

func (f field) line() int { return f.key.Line }

// valLine is the line of the value, or of the key when the value has none
// (an empty value sits on the key's line).
func (f field) valLine() int {
	if f.val != nil && f.val.Line > 0 {
		return f.val.Line
	}
	return f.key.Line
}

func joinKey(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func indexKey(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func (d *decoder) bad(line int, key, format string, args ...any) {
	d.probs.add(d.file, line, key, format, args...)
}

// resolve follows aliases to the node they name. When the alias budget is
// spent it reports that once and returns a null node, which every caller
// treats as "not set".
func (d *decoder) resolve(n *yaml.Node, key string) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		d.aliases++
		if d.aliases > maxAliases {
			if d.aliases == maxAliases+1 {
				d.bad(n.Line, key, "more than %d alias expansions; the file expands too much to be a configuration", maxAliases)
			}
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line}
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a scalar"
	case yaml.DocumentNode:
		return "a document"
	}
	return "nothing"
}

// fields returns the pairs of mapping n keyed by name, reporting unknown
// keys (with a suggestion when one is close), duplicate keys and merge keys.
// A null n is an empty mapping; anything else that is not a mapping is
// reported and yields no fields.
func (d *decoder) fields(n *yaml.Node, line int, path string, known []string) map[string]field {
	out := map[string]field{}
	n = d.resolve(n, path)
	if isNull(n) {
		return out
	}
	if n.Kind != yaml.MappingNode {
		d.bad(nodeLine(n, line), path, "must be a mapping, not %s", kindName(n))
		return out
	}
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := d.resolve(n.Content[i], path)
		v := d.resolve(n.Content[i+1], path)
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.bad(nodeLine(k, line), path, "keys must be plain names, not %s", kindName(k))
			continue
		}
		name := k.Value
		key := joinKey(path, name)
		if name == "<<" {
			d.bad(k.Line, key, "merge keys are not supported; write the keys out")
			continue
		}
		if !contains(known, name) {
			d.bad(k.Line, key, "unknown key%s", suggest(name, known))
			continue
		}
		if prev, dup := first[name]; dup {
			d.bad(k.Line, key, "duplicate key; first given at line %d", prev)
			continue
		}
		first[name] = k.Line
		out[name] = field{key: k, val: v, path: key}
	}
	return out
}

func nodeLine(n *yaml.Node, fallback int) int {
	if n != nil && n.Line > 0 {
		return n.Line
	}
	return fallback
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest names the known key closest to name when it is a likely typo,
// else lists the keys that are valid here.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(strings.ToLower(name), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	return "; valid keys here: " + strings.Join(sorted, ", ")
}

// editDistance is the Levenshtein distance between a and b, bounded in
// cost by the short key names it is used on.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// str returns a scalar value as written. Numbers and booleans are taken as
// their text ("0.5", "512"), which is what sizes, cpu and postgres settings
// want. set is false for null (absent) values and for non-scalars, which
// are reported.
func (d *decoder) str(f field) (s string, set bool) {
	if isNull(f.val) {
		return "", false
	}
	if f.val.Kind != yaml.ScalarNode {
		d.bad(f.valLine(), f.path, "must be a string, not %s", kindName(f.val))
		return "", false
	}
	return f.val.Value, true
}

// integer decodes an integer value with YAML's own rules.
func (d *decoder) integer(f field) (v int64, set bool) {
	if isNull(f.val) {
		return 0, false
	}
	if f.val.Kind != yaml.ScalarNode || f.val.Tag != "!!int" {
		d.bad(f.valLine(), f.path, "must be an integer, not %s", describe(f.val))
		return 0, false
	}
	if err := f.val.Decode(&v); err != nil {
		d.bad(f.valLine(), f.path, "%q is not a 64-bit integer", f.val.Value)
		return 0, false
	}
	return v, true
}

func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return kindName(n)
}

// list returns the elements of a sequence, aliases resolved. A null value is
// an empty list.
func (d *decoder) list(f field) ([]*yaml.Node, bool) {
	if isNull(f.val) {
		return nil, true
	}
	if f.val.Kind != yaml.SequenceNode {
		d.bad(f.valLine(), f.path, "must be a list, not %s", describe(f.val))
		return nil, false
	}
	out := make([]*yaml.Node, len(f.val.Content))
	for i, n := range f.val.Content {
		out[i] = d.resolve(n, indexKey(f.path, i))
	}
	return out, true
}

// path returns a path value resolved against the config file's directory
// and cleaned. The empty string stays empty (not set).
func (d *decoder) path(f field) (string, bool) {
	s, set := d.str(f)
	if !set || s == "" {
		return "", set
	}
	if strings.IndexByte(s, 0) >= 0 {
		d.bad(f.valLine(), f.path, "%q contains a NUL byte", s)
		return "", false
	}
	if !filepath.IsAbs(s) {
		s = filepath.Join(d.dir, s)
	}
	return filepath.Clean(s), true
}

// yamlScannerProblems are the messages yaml.v3's scanner produces. yaml.v3
// numbers lines from 1 for scanner errors but from 0 for parser errors (it
// adds one only for the former), so the two must be told apart to name the
// right line.
var yamlScannerProblems = []string{
	"block sequence entries are not allowed",
	"could not find expected",
	"did not find expected alphabetic",
	"did not find expected comment or line break",
	"did not find expected digit",
	"did not find expected hexdecimal",
	"did not find expected version",
	"did not find expected whitespace",
	"did not find the expected '>'",
	"exceeded max depth",
	"found a tab character",
	"found an indentation indicator",
	"found character that cannot start any token",
	"found extremely long",
	"found invalid Unicode",
	"found unexpected document indicator",
	"found unexpected end of stream",
	"found unexpected non-alphabetical",
	"found unknown directive",
	"found unknown escape",
	"mapping keys are not allowed",
	"mapping values are not allowed",
	"control characters are not allowed",
	"invalid leading UTF-8 octet",
	"invalid trailing UTF-8 octet",
	"incomplete UTF-8 octet sequence",
	"invalid Unicode character",
}

func isScannerProblem(msg string) bool {
	for _, p := range yamlScannerProblems {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// yamlLineRE pulls the line number out of yaml.v3 syntax errors, which are
// plain strings like "yaml: line 7: did not find expected key".
var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// parseDocument parses data into its single document node. A file holding
// more than one document is refused: only the first would take effect.
func (d *decoder) parseDocument(data []byte) (root *yaml.Node) {
	defer func() {
		// yaml.v3 has panicked on malformed input before (CVE-2022-28948);
		// a reload must turn that into a rejected file, not a dead proxy.
		if r := recover(); r != nil {
			d.bad(0, "", "invalid YAML: parser failed: %v", r)
			root = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
		}
		d.yamlError(err)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.bad(extra.Line, "", "a second YAML document starts here; a config file holds exactly one")
		return nil
	} else if !errors.Is(err, io.EOF) {
		d.yamlError(err)
		return nil
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0]
	}
	return &doc
}

func (d *decoder) yamlError(err error) {
	for _, msg := range strings.Split(err.Error(), "\n") {
		msg = strings.TrimSpace(msg)
		if msg == "" || msg == "yaml: unmarshal errors:" {
			continue
		}
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			if !isScannerProblem(m[2]) {
				line++
			}
			d.bad(line, "", "invalid YAML: %s", m[2])
			continue
		}
		d.bad(0, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
	}
}
