// Package proxy is the network-facing half of silo-proxy: it accepts client
// connections (TCP, an optional Unix socket, TLS), reads the PostgreSQL
// startup packet, routes the session to its database's silo through the
// Silos interface, and relays bytes between the client and the silo's
// postmaster. It also owns the cancel map, the admin HTTP endpoints, the
// Prometheus metrics and configuration reloads.
//
// It makes no namespace or privilege-related system calls: everything that
// needs root stays behind Silos, so that this package can later run as an
// unprivileged process.
package proxy
