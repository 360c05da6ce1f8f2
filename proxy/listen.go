package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// listenUnixSocket creates <dir>/.s.PGSQL.<port>, the name libpq derives
// from `-h DIR -p PORT`, with the port of the TCP listen address. A socket
// file left by a crashed process is removed only when nothing answers on
// it, so a second proxy cannot steal a live one's socket.
func listenUnixSocket(dir, tcpAddress string) (*net.UnixListener, string, error) {
	_, port, err := net.SplitHostPort(tcpAddress)
	if err != nil {
		return nil, "", fmt.Errorf("proxy: unix socket: listen.address %q: %w", tcpAddress, err)
	}
	path := filepath.Join(dir, ".s.PGSQL."+port)
	if err := removeStaleSocket(path); err != nil {
		return nil, "", err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, "", fmt.Errorf("proxy: listen %s: %w", path, err)
	}
	// Like the postmaster's default unix_socket_permissions: access is
	// decided by authentication, not by the file mode.
	if err := os.Chmod(path, 0o777); err != nil {
		ln.Close()
		return nil, "", fmt.Errorf("proxy: chmod %s: %w", path, err)
	}
	return ln, path, nil
}

// removeStaleSocket removes path when it is a socket nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("proxy: unix socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("proxy: unix socket: %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("proxy: unix socket: %s is in use by another process", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("proxy: unix socket: probing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("proxy: unix socket: removing stale %s: %w", path, err)
	}
	return nil
}
