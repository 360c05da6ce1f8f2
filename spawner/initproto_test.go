package spawner

import (
	"encoding/json"
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/silo-proxy/silo-proxy/fslayout"
)

func TestReportRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []initReport{
		{Kind: reportStarted, Pid: 2},
		{Kind: reportDone},
		{Kind: reportExited, Code: 0},
		{Kind: reportExited, Signal: 9},
		{Kind: reportExited, Code: 1},
		{Kind: reportError, Step: "bind", Source: "/srv/x", Target: "/import", Origin: "config.yaml:14",
			Flags: "MS_BIND|MS_REC", Errno: int(syscall.ENOENT), Message: "no such file or directory"},
		{Kind: reportError, Step: "initdb", Message: "initdb exited with status 1\nsecond line"},
	}
	for _, want := range cases {
		t.Run(string(want.Kind)+want.Step, func(t *testing.T) {
			t.Parallel()
			line := encodeReport(want)
			if strings.Count(string(line), "\n") != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("encoded report is not exactly one line: %q", line)
			}
			got, err := decodeReport(line)
			if err != nil {
				t.Fatalf("decodeReport(%q): %v", line, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip: got %+v, want %+v", got, want)
			}
		})
	}
}

func TestDecodeReportRejects(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"not json":          `bind failed`,
		"unknown kind":      `{"kind":"reboot"}`,
		"unknown field":     `{"kind":"done","extra":1}`,
		"started no pid":    `{"kind":"started"}`,
		"negative pid":      `{"kind":"started","pid":-2}`,
		"error no step":     `{"kind":"error","message":"x"}`,
		"errno too big":     `{"kind":"error","step":"bind","errno":70000}`,
		"negative errno":    `{"kind":"error","step":"bind","errno":-1}`,
		"exit code too big": `{"kind":"exited","code":300}`,
		"signal too big":    `{"kind":"exited","signal":99}`,
		"two objects":       `{"kind":"done"}{"kind":"done"}`,
		"empty":             ``,
		"wrong type":        `{"kind":"started","pid":"2"}`,
	}
	for name, line := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if r, err := decodeReport([]byte(line)); err == nil {
				t.Errorf("decodeReport(%q) = %+v, want an error", line, r)
			}
		})
	}
}

func TestInitErrorMessage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		r    initReport
		want string
		is   error
	}{
		{
			name: "missing bind source",
			r: initReport{Kind: reportError, Step: "bind", Source: "/srv/x", Target: "/import", Origin: "config.yaml:14",
				Errno: int(syscall.ENOENT), Message: "no such file or directory"},
			want: "bind /srv/x -> /import (config.yaml:14): no such file or directory",
			is:   fs.ErrNotExist,
		},
		{
			name: "remount with flags",
			r: initReport{Kind: reportError, Step: "remount", Target: "/usr", Flags: "MS_RDONLY|MS_REMOUNT|MS_BIND",
				Errno: int(syscall.EPERM), Message: "operation not permitted"},
			want: "remount /usr (MS_RDONLY|MS_REMOUNT|MS_BIND): operation not permitted",
			is:   fs.ErrPermission,
		},
		{
			name: "command without errno",
			r:    initReport{Kind: reportError, Step: "initdb", Message: "initdb exited with status 1"},
			want: "initdb: initdb exited with status 1",
		},
		{
			name: "errno only",
			r:    initReport{Kind: reportError, Step: "sethostname", Errno: int(syscall.EINVAL)},
			want: "sethostname: invalid argument",
			is:   syscall.EINVAL,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.r.initError()
			if got := err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
			if tc.is == nil && errors.Unwrap(err) != nil {
				t.Errorf("Unwrap() = %v, want nil without an errno", errors.Unwrap(err))
			}
		})
	}
}

func TestErrorReportFromMountError(t *testing.T) {
	t.Parallel()
	me := &fslayout.MountError{Op: "bind", Source: "/srv/x", Target: "/import", Origin: "config.yaml:14",
		Flags: syscall.MS_BIND | syscall.MS_REC, Err: syscall.ENOENT}
	r := errorReport("mount", me)
	want := initReport{Kind: reportError, Step: "bind", Source: "/srv/x", Target: "/import", Origin: "config.yaml:14",
		Flags: "MS_BIND|MS_REC", Errno: int(syscall.ENOENT), Message: "no such file or directory"}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("errorReport = %+v, want %+v", r, want)
	}
	got, err := decodeReport(encodeReport(r))
	if err != nil {
		t.Fatal(err)
	}
	if msg := got.initError().Error(); msg != "bind /srv/x -> /import (config.yaml:14, MS_BIND|MS_REC): no such file or directory" {
		t.Errorf("message across the pipe = %q", msg)
	}
	plain := errorReport("config", errors.New("bad config"))
	if plain.Step != "config" || plain.Errno != 0 || plain.Message != "bad config" {
		t.Errorf("errorReport(plain error) = %+v", plain)
	}
}

func validInitConfig() initConfig {
	return initConfig{
		Silo: "sales", Root: "/run/silo-proxy/roots/sales", Hostname: "sales", UID: 1000, GID: 1000,
		Plan: fslayout.Plan{Ops: []fslayout.MountOp{
			{Kind: fslayout.OpProc, Target: "/proc"},
			{Kind: fslayout.OpFile, Target: "/etc/passwd", Content: []byte("postgres:x:1000:1000::/:/x\n"), Mode: 0o644},
		}},
		Postmaster: &initCommand{Step: "postmaster", Path: "/usr/lib/postgresql/15/bin/postgres", Args: []string{"postgres"}},
	}
}

func TestInitConfigRoundTrip(t *testing.T) {
	t.Parallel()
	want := validInitConfig()
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeInitConfig(b)
	if err != nil {
		t.Fatalf("decodeInitConfig: %v", err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("round trip: got %+v, want %+v", *got, want)
	}
}

func TestInitConfigValidate(t *testing.T) {
	t.Parallel()
	cases := map[string]func(*initConfig){
		"no silo":          func(c *initConfig) { c.Silo = "" },
		"relative root":    func(c *initConfig) { c.Root = "roots/sales" },
		"unclean root":     func(c *initConfig) { c.Root = "/run/../x" },
		"root is /":        func(c *initConfig) { c.Root = "/" },
		"uid out of range": func(c *initConfig) { c.UID = 70000 },
		"negative gid":     func(c *initConfig) { c.GID = -1 },
		"nothing to run":   func(c *initConfig) { c.Postmaster = nil },
		"relative command": func(c *initConfig) { c.Postmaster.Path = "postgres" },
		"command no argv":  func(c *initConfig) { c.Postmaster.Args = nil },
		"command no step": func(c *initConfig) {
			c.Postmaster = nil
			c.Commands = []initCommand{{Path: "/bin/initdb", Args: []string{"initdb"}}}
		},
		"commands and postmaster": func(c *initConfig) {
			c.Commands = []initCommand{{Step: "initdb", Path: "/bin/initdb", Args: []string{"initdb"}}}
		},
		"relative target": func(c *initConfig) { c.Plan.Ops[0].Target = "proc" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := validInitConfig()
			pm := *c.Postmaster
			c.Postmaster = &pm
			c.Plan.Ops = append([]fslayout.MountOp(nil), c.Plan.Ops...)
			mutate(&c)
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeInitConfig(b); err == nil {
				t.Errorf("decodeInitConfig accepted %s", b)
			}
		})
	}
	t.Run("unknown field", func(t *testing.T) {
		t.Parallel()
		if _, err := decodeInitConfig([]byte(`{"silo":"a","bogus":1}`)); err == nil {
			t.Error("decodeInitConfig accepted an unknown field")
		}
	})
}

// FuzzDecodeReport feeds arbitrary lines to the decoder the proxy runs on
// what silo-init (code inside the silo's namespaces) writes: it must never
// panic, and whatever it accepts must be valid and survive a round trip.
func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"kind":"started","pid":2}`))
	f.Add([]byte(`{"kind":"error","step":"bind","source":"/srv/x","target":"/import","errno":2,"message":"no such file or directory"}`))
	f.Add([]byte(`{"kind":"exited","code":0}` + "\n"))
	f.Add([]byte(`{"kind":"done"}`))
	f.Add([]byte(`{"kind":"exited","signal":9}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := decodeReport(line)
		if err != nil {
			return
		}
		if verr := r.validate(); verr != nil {
			t.Fatalf("decodeReport accepted an invalid report %+v: %v", r, verr)
		}
		again, err := decodeReport(encodeReport(r))
		if err != nil {
			t.Fatalf("re-decoding %+v: %v", r, err)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip changed %+v into %+v", r, again)
		}
		_ = r.initError().Error()
	})
}

// FuzzDecodeInitConfig checks the init side's config decoder: no panic,
// and every accepted config passes validation.
func FuzzDecodeInitConfig(f *testing.F) {
	b, _ := json.Marshal(validInitConfig())
	f.Add(b)
	f.Add([]byte(`{"silo":"a","root":"/r","uid":1000,"gid":1000,"commands":[{"step":"initdb","path":"/x","args":["x"]}]}`))
	f.Add([]byte(`{"silo":"a","root":"/r","plan":{"Ops":[{"Kind":3,"Target":"/proc"}]}}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := decodeInitConfig(line)
		if err != nil {
			return
		}
		if verr := c.validate(); verr != nil {
			t.Fatalf("decodeInitConfig accepted an invalid config: %v", verr)
		}
	})
}
