package config

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ImportPgSilo reads a pgSilo custom_fs_layout file and the whitelists it
// names and returns the equivalent silos: section as YAML text, ready to be
// pasted into a config file. Each database line becomes a silo serving that
// database, the Default line becomes the catch-all silo "default", and each
// whitelist line becomes an inline mount with its mode.
//
// Unlike custom_fs_layout in a config, which refuses a database whose name
// is not a valid silo name, the import derives a valid name (lower case,
// other characters replaced by '_') and says so in a comment: the output is
// meant to be edited, and the database itself keeps its exact name.
func ImportPgSilo(path string) ([]byte, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("import-pgsilo: %w", err)
	}
	entries, err := ParseLayoutFile(abs)
	if err != nil {
		return nil, err
	}
	ps := &problems{primary: abs}
	if len(entries) == 0 {
		ps.add(abs, 0, "", "no database lines: nothing to import")
		return nil, ps.err()
	}

	used := map[string]bool{}
	for _, e := range entries {
		if e.Default {
			used[DefaultSiloName] = true
		}
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	for _, e := range entries {
		lines, probs, rerr := readWhitelistLines(e.Whitelist)
		if rerr != nil {
			ps.add(abs, e.Line, "WHITELIST", "cannot read whitelist: %v", rerr)
			continue
		}
		ps.addAll(probs)

		item := &yaml.Node{Kind: yaml.MappingNode}
		var name string
		var dbs []string
		if e.Default {
			name, dbs = DefaultSiloName, []string{CatchAll}
			item.HeadComment = fmt.Sprintf("%s:%d: Default (catch-all)", abs, e.Line)
		} else {
			name, dbs = importSiloName(e.Database, used), []string{e.Database}
			item.HeadComment = fmt.Sprintf("%s:%d: database %s", abs, e.Line, e.Database)
			if name != e.Database {
				item.HeadComment += fmt.Sprintf("\nsilo named %q: silo names are [a-z0-9_-] (they become directory and cgroup names)", name)
			}
		}
		dbSeq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, db := range dbs {
			dbSeq.Content = append(dbSeq.Content, strNode(db))
		}
		mounts := &yaml.Node{Kind: yaml.SequenceNode}
		if len(lines) == 0 {
			mounts.Style = yaml.FlowStyle
		}
		for _, l := range lines {
			m := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
			m.Content = append(m.Content,
				strNode("source"), strNode(l.Source),
				strNode("target"), strNode(l.Target),
				strNode("mode"), strNode(string(l.Mode)))
			mounts.Content = append(mounts.Content, m)
		}
		mountsKey := strNode("mounts")
		mountsKey.HeadComment = "from " + e.Whitelist
		item.Content = append(item.Content,
			strNode("name"), strNode(name),
			strNode("databases"), dbSeq,
			mountsKey, mounts)
		seq.Content = append(seq.Content, item)
	}
	if err := ps.err(); err != nil {
		return nil, err
	}

	top := &yaml.Node{Kind: yaml.MappingNode}
	top.HeadComment = strings.Join([]string{
		"silos: imported from pgSilo custom_fs_layout " + abs,
		"by `silo-proxy import-pgsilo`. Each database line became a silo serving",
		"that database, the Default line the catch-all silo \"default\"; whitelist",
		"lines became mounts. Every silo inherits the defaults: section.",
	}, "\n")
	top.Content = append(top.Content, strNode("silos"), seq)
	doc := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{top}}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("import-pgsilo: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("import-pgsilo: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// strNode is a scalar tagged as a string, so that the encoder quotes values
// such as "*", "no" or "123" that would otherwise read back as something
// else.
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func readWhitelistLines(path string) ([]whitelistLine, []Problem, error) {
	data, err := readPgSiloFile(path)
	if err != nil {
		return nil, nil, err
	}
	lines, probs := parseWhitelist(data, path)
	return lines, probs, nil
}

// importSiloName derives a valid, unused silo name from a database name.
func importSiloName(db string, used map[string]bool) string {
	var b strings.Builder
	for _, r := range strings.ToLower(db) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name == "" || name[0] == '_' || name[0] == '-' {
		name = "db" + name
	}
	if len(name) > 63 {
		name = name[:63]
	}
	base := name
	for i := 2; used[name]; i++ {
		suffix := "-" + strconv.Itoa(i)
		if len(base)+len(suffix) > 63 {
			name = base[:63-len(suffix)] + suffix
		} else {
			name = base + suffix
		}
	}
	used[name] = true
	return name
}
