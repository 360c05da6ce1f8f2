package proxy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/silo-proxy/silo-proxy/config"
)

// TestReloadAddRemoveAndFailure swaps configs through Reload with a fake
// loader: an added silo is routable at once, a removed one answers 3D000
// to new connections while an open session continues, and a failing load
// or spawner keeps the running config.
func TestReloadAddRemoveAndFailure(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, true)
	cfg.Silos = cfg.Silos[:1] // only silo a
	var mu sync.Mutex
	var next *config.Config
	var loadErr error
	env := startEnv(t, cfg, Options{LoadConfig: func(path string) (*config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		if path != cfg.Path {
			t.Errorf("loader asked for %q", path)
		}
		return next, loadErr
	}})
	m := env.srv.Metrics()
	connect := func(db string) (*pgconn.PgConn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return pgconn.Connect(ctx, connString(env.srv, db, ""))
	}
	is3D000 := func(err error) bool {
		var pgErr *pgconn.PgError
		return errors.As(err, &pgErr) && pgErr.Code == "3D000"
	}
	if _, err := connect("b"); !is3D000(err) {
		t.Fatalf("b before reload: %v", err)
	}
	open, err := connect("a")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(context.Background())

	// Add b, remove a.
	added := testConfig(t, true)
	added.Path = cfg.Path
	added.Silos = added.Silos[1:]
	mu.Lock()
	next = added
	mu.Unlock()
	if err := env.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	c, err := connect("b")
	if err != nil {
		t.Fatalf("added silo not routable: %v", err)
	}
	c.Close(context.Background())
	if _, err := connect("a"); !is3D000(err) {
		t.Fatalf("removed silo: %v, want 3D000", err)
	}
	queryText(t, open, "session of a removed silo continues")

	// Failures keep the config: a load error, then a spawner refusal.
	mu.Lock()
	loadErr = errors.New("config.yaml:3: bad")
	mu.Unlock()
	if err := env.srv.Reload(); err == nil {
		t.Fatal("reload with a load error succeeded")
	}
	mu.Lock()
	loadErr, next = nil, testConfig(t, true)
	mu.Unlock()
	env.silos.mu.Lock()
	env.silos.reconfErr = errors.New("refused")
	env.silos.mu.Unlock()
	if err := env.srv.Reload(); err == nil {
		t.Fatal("reload refused by the spawner succeeded")
	}
	c, err = connect("b")
	if err != nil {
		t.Fatalf("old config lost after failed reloads: %v", err)
	}
	c.Close(context.Background())
	if _, err := connect("a"); !is3D000(err) {
		t.Fatalf("failed reload changed routing: %v", err)
	}
	if got := testutil.ToFloat64(m.configReloads.WithLabelValues("failure")); got != 2 {
		t.Fatalf("failures counted %v", got)
	}
	if got := testutil.ToFloat64(m.configReloads.WithLabelValues("success")); got != 1 {
		t.Fatalf("successes counted %v", got)
	}
	env.silos.mu.Lock()
	defer env.silos.mu.Unlock()
	if len(env.silos.reconfigured) != 1 || env.silos.reconfigured[0] != added {
		t.Fatalf("spawner reconfigured with %v", env.silos.reconfigured)
	}
}

// TestWatcher checks the file events that must trigger a reload: an
// in-place write, an editor's rename over the file, and a symlink swap;
// a burst of writes yields one reload, and unrelated files none.
func TestWatcher(t *testing.T) {
	t.Parallel()
	// Long enough that a stalled machine does not split a burst in two.
	const debounce = time.Second
	setup := func(t *testing.T, symlink bool) (path, dir string, count *atomic.Int32) {
		dir = t.TempDir()
		path = filepath.Join(dir, "silo-proxy.yaml")
		if symlink {
			os.Mkdir(filepath.Join(dir, "v1"), 0o755)
			os.WriteFile(filepath.Join(dir, "v1", "silo-proxy.yaml"), []byte("v1"), 0o644)
			os.Symlink("v1", filepath.Join(dir, "current"))
			os.Symlink(filepath.Join("current", "silo-proxy.yaml"), path)
		} else {
			os.WriteFile(path, []byte("v1"), 0o644)
		}
		count = new(atomic.Int32)
		w, err := watchConfig(path, debounce, discardLogger(), func() { count.Add(1) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		return path, dir, count
	}
	waitCount := func(t *testing.T, c *atomic.Int32, want int32) {
		t.Helper()
		waitFor(t, "reload", func() bool { return c.Load() >= want })
		time.Sleep(2 * debounce) // no further reload follows
		if got := c.Load(); got != want {
			t.Fatalf("%d reloads, want %d", got, want)
		}
	}
	t.Run("burst of in-place writes", func(t *testing.T) {
		t.Parallel()
		path, _, count := setup(t, false)
		for i := range 5 {
			os.WriteFile(path, []byte{'v', byte('2' + i)}, 0o644)
		}
		waitCount(t, count, 1)
	})
	t.Run("rename over the file", func(t *testing.T) {
		t.Parallel()
		path, dir, count := setup(t, false)
		tmp := filepath.Join(dir, ".silo-proxy.yaml.swp")
		os.WriteFile(tmp, []byte("v2"), 0o644)
		os.Rename(tmp, path)
		waitCount(t, count, 1)
		// The watch survives the replaced inode.
		os.WriteFile(tmp, []byte("v3"), 0o644)
		os.Rename(tmp, path)
		waitCount(t, count, 2)
	})
	t.Run("symlink swap", func(t *testing.T) {
		t.Parallel()
		_, dir, count := setup(t, true)
		os.Mkdir(filepath.Join(dir, "v2"), 0o755)
		os.WriteFile(filepath.Join(dir, "v2", "silo-proxy.yaml"), []byte("v2 longer"), 0o644)
		os.Symlink("v2", filepath.Join(dir, "current.tmp"))
		os.Rename(filepath.Join(dir, "current.tmp"), filepath.Join(dir, "current"))
		waitCount(t, count, 1)
	})
	t.Run("unrelated file", func(t *testing.T) {
		t.Parallel()
		_, dir, count := setup(t, false)
		os.WriteFile(filepath.Join(dir, "other.txt"), []byte("x"), 0o644)
		time.Sleep(3 * debounce)
		if got := count.Load(); got != 0 {
			t.Fatalf("%d reloads for an unrelated file", got)
		}
	})
}

// TestReloadOnFileChange wires the watcher to Server.Reload.
func TestReloadOnFileChange(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, true)
	os.WriteFile(cfg.Path, []byte("initial"), 0o644)
	var loads atomic.Int32
	env := startEnv(t, cfg, Options{WatchConfig: true, ReloadDebounce: 50 * time.Millisecond,
		LoadConfig: func(path string) (*config.Config, error) {
			loads.Add(1)
			b, _ := os.ReadFile(path)
			if string(b) == "invalid" {
				return nil, errors.New(path + ":1: invalid")
			}
			return cfg, nil
		}})
	os.WriteFile(cfg.Path, []byte("invalid"), 0o644)
	m := env.srv.Metrics()
	waitFor(t, "failed reload counted", func() bool { return testutil.ToFloat64(m.configReloads.WithLabelValues("failure")) == 1 })
	os.WriteFile(cfg.Path, []byte("valid"), 0o644)
	waitFor(t, "reload counted", func() bool { return testutil.ToFloat64(m.configReloads.WithLabelValues("success")) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, connString(env.srv, "a", ""))
	if err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
}
