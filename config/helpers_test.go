package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fixture is a temporary directory holding things mount sources and file
// references can point at.
type fixture struct {
	dir string
}

// newFixture creates dir/src (a directory), dir/file (a regular file),
// dir/fifo (a named pipe), dir/cert.pem, dir/key.pem, dir/password and
// dir/wl (a whitelist mounting dir/src at /src).
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	if err := os.Mkdir(filepath.Join(f.dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"file", "cert.pem", "key.pem", "password"} {
		f.write(t, name, "x\n")
	}
	f.write(t, "wl", "{{dir}}/src /src ro\n")
	if err := syscall.Mkfifo(filepath.Join(f.dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(f.expand(content)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// expand replaces {{dir}} with the fixture directory.
func (f *fixture) expand(s string) string {
	return strings.ReplaceAll(s, "{{dir}}", f.dir)
}

// load writes content as config.yaml in the fixture and loads it.
func (f *fixture) load(t *testing.T, content string) (*Config, error) {
	t.Helper()
	return Load(f.write(t, "config.yaml", content))
}

// markedLine returns the 1-based line of content that carries the marker
// comment "#<", so that test cases need no hand-counted line numbers.
func markedLine(t *testing.T, content string) int {
	t.Helper()
	for i, l := range strings.Split(content, "\n") {
		if strings.Contains(l, "#<") {
			return i + 1
		}
	}
	t.Fatalf("no #< marker in:\n%s", content)
	return 0
}

// problemsOf returns the problems of a *ValidationError, failing the test
// for any other error.
func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	if err == nil {
		t.Fatal("got no error, want a validation error")
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %T %v, want *ValidationError", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatal("ValidationError with no problems")
	}
	return ve.Problems
}

// wantProblem asserts that err reports a problem in file at line under key
// whose message contains msg, and that the printed error carries
// "file:line: key:".
func wantProblem(t *testing.T, err error, file string, line int, key, msg string) {
	t.Helper()
	ps := problemsOf(t, err)
	for _, p := range ps {
		if filepath.Base(p.File) == filepath.Base(file) && p.Line == line && p.Key == key && strings.Contains(p.Message, msg) {
			prefix := p.File + ":" + strconv.Itoa(line) + ": "
			if key != "" {
				prefix += key + ": "
			}
			if !strings.Contains(err.Error(), prefix) {
				t.Errorf("error text lacks %q:\n%s", prefix, err)
			}
			return
		}
	}
	t.Errorf("no problem %s:%d: %s: ...%s...; got:\n%s", filepath.Base(file), line, key, msg, err)
}

// mustLoad loads content and fails the test on any error.
func (f *fixture) mustLoad(t *testing.T, content string) *Config {
	t.Helper()
	cfg, err := f.load(t, content)
	if err != nil {
		t.Fatalf("unexpected error:\n%v\nconfig:\n%s", err, f.expand(content))
	}
	return cfg
}
