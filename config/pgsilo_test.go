package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseLayout(t *testing.T) {
	t.Parallel()
	t.Run("good file", func(t *testing.T) {
		t.Parallel()
		data := "# pgSilo custom_fs_layout\n\nsales /etc/pgsilo/sales.wl\n  \t\nDefault\t/etc/pgsilo/default.wl # the rest\nhr  /etc/pgsilo/./hr.wl\n"
		got, err := ParseLayout([]byte(data), "layout")
		if err != nil {
			t.Fatal(err)
		}
		want := []LayoutEntry{
			{Database: "sales", Whitelist: "/etc/pgsilo/sales.wl", Line: 3},
			{Default: true, Whitelist: "/etc/pgsilo/default.wl", Line: 5},
			{Database: "hr", Whitelist: "/etc/pgsilo/hr.wl", Line: 6},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})
	t.Run("Default in any case", func(t *testing.T) {
		t.Parallel()
		for _, kw := range []string{"Default", "default", "DEFAULT", "dEfAuLt"} {
			got, err := ParseLayout([]byte(kw+" /wl\n"), "layout")
			if err != nil || len(got) != 1 || !got[0].Default || got[0].Database != "" {
				t.Errorf("%s: got %+v, %v", kw, got, err)
			}
		}
	})
	t.Run("empty file", func(t *testing.T) {
		t.Parallel()
		got, err := ParseLayout([]byte("# only comments\n\n"), "layout")
		if err != nil || len(got) != 0 {
			t.Errorf("got %+v, %v", got, err)
		}
	})
	bad := []struct {
		name, data string
		line       int
		key, msg   string
	}{
		{"missing field", "sales\n", 1, "WHITELIST", "missing"},
		{"missing field after comment", "# c\nsales # /x\n", 2, "WHITELIST", "missing"},
		{"extra field", "sales /wl ro\n", 1, "", `extra field "ro"`},
		{"relative path", "\nsales etc/sales.wl\n", 2, "WHITELIST", "relative path"},
		{"duplicate database", "sales /a\nsales /b\n", 2, "DBNAME", "already listed at line 1"},
		{"duplicate default", "Default /a\ndefault /b\n", 2, "DBNAME", "catch-all is already given at line 1"},
		{"star is not a database", "* /a\n", 1, "DBNAME", "catch-all line is written Default"},
		{"database name too long", strings.Repeat("x", 64) + " /a\n", 1, "DBNAME", "NAMEDATALEN"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseLayout([]byte(tc.data), "pgsilo.layout")
			wantProblem(t, err, "pgsilo.layout", tc.line, tc.key, tc.msg)
		})
	}
	t.Run("every bad line is reported", func(t *testing.T) {
		t.Parallel()
		_, err := ParseLayout([]byte("a\nb c d\nc rel\nok /fine\n"), "l")
		if ps := problemsOf(t, err); len(ps) != 3 {
			t.Errorf("got %d problems, want 3:\n%v", len(ps), err)
		}
	})
}

func TestParseWhitelist(t *testing.T) {
	t.Parallel()
	t.Run("good file", func(t *testing.T) {
		t.Parallel()
		data := "# whitelist\n\n/srv/sales /import ro\n\t/usr/share/zoneinfo   /usr/share/zoneinfo\tro  # tz\n/srv/out/ /out/./x rw\r\n"
		got, err := ParseWhitelistData([]byte(data), "sales.wl")
		if err != nil {
			t.Fatal(err)
		}
		want := []Mount{
			{Source: "/srv/sales", Target: "/import", Mode: MountRO, Origin: "sales.wl:3"},
			{Source: "/usr/share/zoneinfo", Target: "/usr/share/zoneinfo", Mode: MountRO, Origin: "sales.wl:4"},
			{Source: "/srv/out", Target: "/out/./x", Mode: MountRW, Origin: "sales.wl:5"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
	})
	accepted := []struct {
		name, data string
		want       int
	}{
		{"comment line", "# /a /b ro\n", 0},
		{"indented comment", "   #/a /b ro\n", 0},
		{"blank lines", "\n\n \t \n", 0},
		{"trailing comment", "/a /b ro #no space needed before text\n", 1},
		{"no final newline", "/a /b rw", 1},
		{"CRLF line ends", "/a /b ro\r\n/c /d rw\r\n", 2},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWhitelistData([]byte(tc.data), "x.wl")
			if err != nil || len(got) != tc.want {
				t.Errorf("got %d mounts, %v; want %d", len(got), err, tc.want)
			}
		})
	}
	bad := []struct {
		name, data string
		line       int
		key, msg   string
	}{
		{"missing dest", "/srv\n", 1, "DEST", "missing"},
		{"missing mode", "# c\n\n/srv /srv\n", 3, "MODE", "missing"},
		{"bad flag", "/srv /srv rx\n", 1, "MODE", `"rx" is not ro or rw`},
		{"upper-case flag", "/srv /srv RO\n", 1, "MODE", `"RO" is not ro or rw`},
		{"extra field", "/srv /srv ro nosuid\n", 1, "", `extra field "nosuid"`},
		{"relative source", "srv /srv ro\n", 1, "SOURCE", "relative path"},
		{"relative dest", "/srv srv ro\n", 1, "DEST", "relative path"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseWhitelistData([]byte(tc.data), "x.wl")
			wantProblem(t, err, "x.wl", tc.line, tc.key, tc.msg)
		})
	}
}

func TestPgSiloFilesOnDisk(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	wl := f.write(t, "a.wl", "{{dir}}/src /a ro\n")
	layout := f.write(t, "layout", "a "+wl+"\n")
	mounts, err := ParseWhitelist(wl)
	if err != nil || len(mounts) != 1 || mounts[0].Origin != wl+":1" {
		t.Errorf("ParseWhitelist = %+v, %v", mounts, err)
	}
	entries, err := ParseLayoutFile(layout)
	if err != nil || len(entries) != 1 || entries[0].Whitelist != wl {
		t.Errorf("ParseLayoutFile = %+v, %v", entries, err)
	}
	// Reading a FIFO would block and a device never ends: both refused.
	for _, p := range []string{filepath.Join(f.dir, "fifo"), "/dev/zero", filepath.Join(f.dir, "src")} {
		if _, err := ParseWhitelist(p); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("ParseWhitelist(%s) = %v, want refusal", p, err)
		}
	}
	big := filepath.Join(f.dir, "big")
	if err := os.WriteFile(big, make([]byte, maxPgSiloFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseLayoutFile(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: %v", err)
	}
	if _, err := ParseLayoutFile(filepath.Join(f.dir, "absent")); !os.IsNotExist(err) {
		t.Errorf("absent file: %v", err)
	}
}

// TestImportPgSiloRoundTrip checks the promise of import-pgsilo: its output
// pasted into a config loads, and yields the same silos and mounts as
// pointing custom_fs_layout at the pgSilo file directly.
func TestImportPgSiloRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, d := range []string{"sales", "hr", "tz dir"} {
		if err := os.MkdirAll(filepath.Join(f.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.write(t, "wls/sales", "# sales whitelist\n{{dir}}/sales /import ro\n{{dir}}/src /export rw\n")
	f.write(t, "wls/hr", "{{dir}}/hr /hr rw\n\n")
	f.write(t, "wls/default", "# nothing\n")
	layout := f.write(t, "pgsilo.layout", `# pgSilo layout
sales {{dir}}/wls/sales
hr    {{dir}}/wls/hr
default {{dir}}/wls/default
`)

	out, err := ImportPgSilo(layout)
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	if !strings.HasPrefix(text, "# silos: imported from pgSilo custom_fs_layout "+layout) {
		t.Errorf("missing header comment naming the source:\n%s", text)
	}
	imported := f.mustLoad(t, "state_dir: ./state\n\n"+text)
	direct := f.mustLoad(t, "state_dir: ./state\ncustom_fs_layout: pgsilo.layout\n")

	type silo struct {
		Name      string
		Databases []string
		Mounts    [][3]string
	}
	summary := func(c *Config) []silo {
		var out []silo
		for _, s := range c.Silos {
			x := silo{Name: s.Name, Databases: s.Databases}
			for _, m := range s.Mounts {
				x.Mounts = append(x.Mounts, [3]string{m.Source, m.Target, string(m.Mode)})
			}
			out = append(out, x)
		}
		return out
	}
	got, want := summary(imported), summary(direct)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("imported silos differ from custom_fs_layout:\n got %+v\nwant %+v\nyaml:\n%s", got, want, text)
	}
	if len(want) != 3 || len(want[0].Mounts) != 2 || want[0].Mounts[1][2] != "rw" {
		t.Errorf("fixture not loaded as expected: %+v", want)
	}
}

func TestImportPgSiloNamesAndErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.write(t, "wl", "{{dir}}/src /s ro\n")
	layout := f.write(t, "layout", "Sales {{dir}}/wl\nsales {{dir}}/wl\n_x {{dir}}/wl\nDefault {{dir}}/wl\n")
	out, err := ImportPgSilo(layout)
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.mustLoad(t, string(out))
	names := map[string]string{}
	for _, s := range cfg.Silos {
		names[s.Databases[0]] = s.Name
	}
	want := map[string]string{"Sales": "sales", "sales": "sales-2", "_x": "db_x", "*": "default"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("derived names = %v, want %v\n%s", names, want, out)
	}
	if !strings.Contains(string(out), `silo named "sales"`) {
		t.Errorf("renaming not explained in a comment:\n%s", out)
	}

	bad := f.write(t, "bad.layout", "a {{dir}}/bad.wl\nb {{dir}}/absent.wl\n")
	f.write(t, "bad.wl", "/x /y maybe\n")
	_, err = ImportPgSilo(bad)
	wantProblem(t, err, "bad.wl", 1, "MODE", "not ro or rw")
	wantProblem(t, err, "bad.layout", 2, "WHITELIST", "cannot read whitelist")

	empty := f.write(t, "empty.layout", "# nothing\n")
	if _, err := ImportPgSilo(empty); err == nil || !strings.Contains(err.Error(), "nothing to import") {
		t.Errorf("empty layout: %v", err)
	}
}
