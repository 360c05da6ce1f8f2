package fslayout

import "github.com/silo-proxy/silo-proxy/config"

// Install is a PostgreSQL server installation as found on the host.
type Install struct {
	BinDir    string // holds postgres, initdb, pg_ctl, psql
	PkgLibDir string // pg_config --pkglibdir: loadable modules
	ShareDir  string // pg_config --sharedir: catalogs, extensions, timezonesets
	// Major is the server's major version ("15"), from `postgres --version`.
	Major string
	// SystemTZData is the directory given to configure as
	// --with-system-tzdata (Debian: /usr/share/zoneinfo): the server reads
	// time zones there instead of ShareDir/timezone. Empty when pg_config
	// does not report it.
	SystemTZData string
}

// Spec is everything Build needs to compute one silo's plan.
type Spec struct {
	Silo      string
	Layout    config.Layout
	Install   Install
	DataDir   string         // host path, appears at DataTarget (rw)
	SocketDir string         // host path, appears at SocketTarget (rw)
	Mounts    []config.Mount // the silo's whitelist, after inheritance
	// Bootstrap asks for the plan initdb runs in: the silo's own plan plus
	// what initdb needs and a running silo must not have (initdb starts its
	// bootstrap backend through popen(), hence /bin/sh and its libraries).
	Bootstrap bool
}
