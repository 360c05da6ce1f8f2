// Command silo-proxy is a PostgreSQL connection-routing proxy that runs every
// database (or group of databases) in its own silo: a postmaster launched in
// fresh Linux namespaces on a whitelisted root filesystem.
//
// This package holds flags, wiring and the silo-init dispatch only; the
// machinery lives in config, fslayout, spawner and proxy.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
)

// Exit codes shared by every subcommand.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one subcommand: run receives the arguments after its name and
// returns the process exit code.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{
	"version":       {"print the version and exit", cmdVersion},
	"check":         {"validate a configuration and show how each silo will run", cmdCheck},
	"layout":        {"print the mount plan of a silo", cmdLayout},
	"import-pgsilo": {"convert a pgSilo custom_fs_layout file to YAML silos", cmdImportPgSilo},
	"run":           {"serve clients, routing each database to its silo", cmdRun},
	"status":        {"print the silos of a running proxy", cmdStatus},
	"psql":          {"run psql on a silo's own socket as its superuser", cmdPsql},
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "silo-proxy: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return cmd.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: silo-proxy COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'silo-proxy COMMAND -h' for the flags of a command.")
}

// version is set at build time with -ldflags "-X main.version=..."; when it
// is empty the module version or VCS revision recorded by the Go toolchain
// is printed instead.
var version string

func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "devel-" + rev + dirty
	}
	if v == "" || v == "(devel)" {
		return "devel"
	}
	return v
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "usage: silo-proxy version")
		return exitUsage
	}
	fmt.Fprintf(stdout, "silo-proxy %s (%s)\n", versionString(), runtimeVersion())
	return exitOK
}
