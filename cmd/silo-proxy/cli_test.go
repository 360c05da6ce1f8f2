package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

// run invokes the CLI in-process and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(args, &out, &errb)
	return code, out.String(), errb.String()
}

func needInstall(t *testing.T) {
	t.Helper()
	if _, err := fslayout.FindInstall("auto"); err != nil {
		t.Skipf("no PostgreSQL server installation: %v", err)
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	cases := [][]string{
		nil,
		{"no-such-command"},
		{"check"},
		{"check", "--config"},
		{"check", "--config", "x.yaml", "extra"},
		{"layout", "--config", "x.yaml"},
		{"import-pgsilo"},
		{"import-pgsilo", "a", "b"},
		{"version", "extra"},
	}
	for _, args := range cases {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			if code, _, stderr := run(t, args...); code != exitUsage {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "silo-proxy ") {
		t.Fatalf("version: exit %d, output %q", code, out)
	}
}

func TestCheckExampleConfig(t *testing.T) {
	t.Parallel()
	needInstall(t)
	code, out, stderr := run(t, "check", "--config", "../../config.example.yaml")
	if code != exitOK {
		t.Fatalf("check of config.example.yaml: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	for _, want := range []string{"valid, 2 silo(s)", "mode: ", "silo default", "databases=*", "silo app", "databases=app,app_reports", "memory=1GiB", "pids=200"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckListsEveryProblem(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "bad.yaml"), `state_dir: ./state
defaults:
  layout: tiny
  max_clients: 0
silos:
  - name: a
    databases: [x]
  - name: a
    databases: [x]
`)
	code, out, stderr := run(t, "check", "--config", cfg)
	if code != exitFailure {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFailure, out, stderr)
	}
	for _, want := range []string{"bad.yaml:3:", "defaults.layout", "bad.yaml:4:", "defaults.max_clients", "bad.yaml:8:", "bad.yaml:9:"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestLayoutMinimalHasNoShell(t *testing.T) {
	t.Parallel()
	needInstall(t)
	code, out, stderr := run(t, "layout", "--config", "../../config.example.yaml", "app")
	if code != exitOK {
		t.Fatalf("layout: exit %d\n%s", code, stderr)
	}
	inst, _ := fslayout.FindInstall("auto")
	var sawBinDir, sawData, sawProc bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[1] != "->" {
			t.Fatalf("line %q is not `SOURCE -> TARGET MODE`", line)
		}
		switch {
		case f[2] == inst.BinDir && f[3] == "ro":
			sawBinDir = true
		case f[2] == fslayout.DataTarget && f[3] == "rw":
			sawData = true
		case f[2] == "/proc" && f[3] == "proc":
			sawProc = true
		}
		for _, sh := range []string{"/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", "/bin/dash", "/usr/bin/dash"} {
			if f[2] == sh || f[0] == sh {
				t.Errorf("minimal layout contains a shell: %s", line)
			}
		}
	}
	if !sawBinDir || !sawData || !sawProc {
		t.Errorf("layout lacks bindir ro (%v), data rw (%v) or proc (%v):\n%s", sawBinDir, sawData, sawProc, out)
	}
	if code, _, _ := run(t, "layout", "--config", "../../config.example.yaml", "nosuchsilo"); code != exitFailure {
		t.Errorf("unknown silo: exit %d, want %d", code, exitFailure)
	}
}

func TestImportPgSiloOutputPassesCheck(t *testing.T) {
	t.Parallel()
	needInstall(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "import")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	wl := writeFile(t, filepath.Join(dir, "sales.whitelist"), "# sales\n"+src+" /import ro\n\n")
	def := writeFile(t, filepath.Join(dir, "default.whitelist"), src+" /srv rw\n")
	layout := writeFile(t, filepath.Join(dir, "layout.txt"), "Default "+def+"\nsales "+wl+"\n")

	code, yaml, stderr := run(t, "import-pgsilo", layout)
	if code != exitOK {
		t.Fatalf("import-pgsilo: exit %d\n%s", code, stderr)
	}
	cfg := writeFile(t, filepath.Join(dir, "config.yaml"), "state_dir: ./state\n"+yaml)
	code, out, stderr := run(t, "check", "--config", cfg)
	if code != exitOK {
		t.Fatalf("check of imported config: exit %d\nyaml:\n%s\nstderr:\n%s", code, yaml, stderr)
	}
	for _, want := range []string{"silo default", "databases=*", "silo sales", "databases=sales", "mounts=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if code, _, _ := run(t, "import-pgsilo", filepath.Join(dir, "missing.txt")); code != exitFailure {
		t.Errorf("missing file: exit %d, want %d", code, exitFailure)
	}
}
