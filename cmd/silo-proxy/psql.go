package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// cmdPsql runs psql on a silo's own socket as the silo's superuser: the
// operator's way into a silo without going through the proxy (and without
// counting against max_clients). psql replaces this process (execve), so
// the terminal, readline and Ctrl-C behave as with psql itself.
func cmdPsql(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("psql", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (required)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: silo-proxy psql --config FILE SILO [psql arguments...]")
		fmt.Fprintln(stderr, "Runs psql on SILO's socket as its superuser postgres, on the silo's first listed")
		fmt.Fprintln(stderr, "database (postgres for a catch-all silo); psql arguments such as -d, -c or -f follow SILO.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *cfgPath == "" || fs.NArg() < 1 {
		fs.Usage()
		return exitUsage
	}
	name, psqlArgs := fs.Arg(0), fs.Args()[1:]
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		printConfigError(stderr, err)
		return exitFailure
	}
	inv, err := psqlInvocation(cfg, name, psqlArgs, os.Environ())
	if err != nil {
		fmt.Fprintf(stderr, "silo-proxy psql: %v\n", err)
		return exitFailure
	}
	err = syscall.Exec(inv.path, inv.argv, inv.env)
	fmt.Fprintf(stderr, "silo-proxy psql: running %s: %v\n", inv.path, err)
	return exitFailure
}

// psqlRun is a prepared psql execution.
type psqlRun struct {
	path string
	argv []string
	env  []string
}

// psqlInvocation prepares the psql command line for silo name: its socket
// directory, user postgres, its first listed database, the password in
// PGPASSWORD (any PGPASSWORD, PGHOST, ... of the caller's environment
// removed, since libpq reads the first of duplicated variables), and the
// caller's psql arguments last, so that their -d or -c win.
func psqlInvocation(cfg *config.Config, name string, psqlArgs, environ []string) (psqlRun, error) {
	s := cfg.Silo(name)
	if s == nil {
		return psqlRun{}, fmt.Errorf("%s: no silo named %q", cfg.Path, name)
	}
	run := cfg.Paths(name).Run
	sock := filepath.Join(run, ".s.PGSQL.5432")
	if _, err := os.Stat(sock); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return psqlRun{}, fmt.Errorf("silo %s is not running (no socket at %s); start silo-proxy run first", name, sock)
		}
		return psqlRun{}, fmt.Errorf("silo %s: %v", name, err)
	}
	pw, err := spawner.ReadPassword(cfg, s)
	if err != nil {
		return psqlRun{}, fmt.Errorf("silo %s: reading the superuser password: %v", name, err)
	}
	path, err := findPsql(cfg)
	if err != nil {
		return psqlRun{}, err
	}
	db := "postgres"
	for _, d := range s.Databases {
		if d != config.CatchAll {
			db = d
			break
		}
	}
	argv := append([]string{"psql", "-h", run, "-p", "5432", "-U", fslayout.PostgresUser, "-d", db}, psqlArgs...)
	env := make([]string, 0, len(environ)+1)
	for _, e := range environ {
		k, _, _ := strings.Cut(e, "=")
		switch k {
		case "PGPASSWORD", "PGPASSFILE", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGSERVICEFILE":
			continue
		}
		env = append(env, e)
	}
	env = append(env, "PGPASSWORD="+pw)
	return psqlRun{path: path, argv: argv, env: env}, nil
}

// findPsql prefers psql on PATH (Debian's wrapper picks the matching
// client) and falls back to the server installation's bindir.
func findPsql(cfg *config.Config) (string, error) {
	if p, err := exec.LookPath("psql"); err == nil {
		return p, nil
	}
	inst, err := fslayout.FindInstall(cfg.Postgres.BinDir)
	if err != nil {
		return "", fmt.Errorf("psql is not on PATH and postgres.bindir gives none: %v", err)
	}
	p := filepath.Join(inst.BinDir, "psql")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("psql is neither on PATH nor in %s", inst.BinDir)
	}
	return p, nil
}
