package proxy

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// configWatcher triggers reloads when the configuration file changes.
//
// It watches the file's directory, not the file: editors save by writing a
// new file and renaming it over the old one, and Kubernetes-style config
// mounts swap a symlink; a watch on the file itself would follow the old
// inode and go silent after the first such save. Events naming the file
// trigger a reload; events on other names do when the file's identity
// (device, inode, size, mtime, followed through symlinks) changed, which
// catches symlink swaps. When the path is a symlink, the directory of its
// target is watched too, so edits of the target are seen.
//
// Events are debounced: a save is a burst (create, write, chmod, rename),
// and one reload should follow it.
type configWatcher struct {
	path   string
	base   string
	log    *slog.Logger
	w      *fsnotify.Watcher
	timer  *time.Timer
	delay  time.Duration
	done   chan struct{}
	closed sync.Once

	mu   sync.Mutex
	last fileIdentity
}

type fileIdentity struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func identityOf(path string) fileIdentity {
	fi, err := os.Stat(path)
	if err != nil {
		return fileIdentity{}
	}
	id := fileIdentity{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}

// watchConfig starts watching path; reload runs (on a timer goroutine)
// once events stop arriving for delay.
func watchConfig(path string, delay time.Duration, log *slog.Logger, reload func()) (*configWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("proxy: watching config: %w", err)
	}
	dirs := []string{filepath.Dir(path)}
	if target, err := filepath.EvalSymlinks(path); err == nil && filepath.Dir(target) != dirs[0] {
		dirs = append(dirs, filepath.Dir(target))
	}
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("proxy: watching config directory %s: %w", d, err)
		}
	}
	cw := &configWatcher{
		path:  path,
		base:  filepath.Base(path),
		log:   log,
		w:     w,
		delay: delay,
		done:  make(chan struct{}),
		last:  identityOf(path),
	}
	cw.timer = time.AfterFunc(time.Hour, func() {
		select {
		case <-cw.done:
			return
		default:
		}
		reload()
	})
	cw.timer.Stop()
	go cw.loop()
	return cw, nil
}

func (cw *configWatcher) loop() {
	for {
		select {
		case <-cw.done:
			return
		case ev, ok := <-cw.w.Events:
			if !ok {
				return
			}
			if cw.relevant(ev) {
				cw.log.Debug("config file changed", "event", ev.String())
				cw.timer.Reset(cw.delay)
			}
		case err, ok := <-cw.w.Errors:
			if !ok {
				return
			}
			// An overflowed event queue may have hidden a change.
			cw.log.Warn("config watcher error; reloading to be safe", "err", err)
			cw.timer.Reset(cw.delay)
		}
	}
}

func (cw *configWatcher) relevant(ev fsnotify.Event) bool {
	id := identityOf(cw.path)
	cw.mu.Lock()
	changed := id != cw.last
	cw.last = id
	cw.mu.Unlock()
	return filepath.Base(ev.Name) == cw.base || changed
}

// Close stops watching; a pending reload is dropped.
func (cw *configWatcher) Close() error {
	var err error
	cw.closed.Do(func() {
		close(cw.done)
		cw.timer.Stop()
		err = cw.w.Close()
	})
	return err
}
