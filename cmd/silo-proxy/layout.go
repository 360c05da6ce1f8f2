package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
)

// cmdLayout prints the mount plan of one silo: exactly what its postmaster
// will see, one line per operation.
func cmdLayout(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("layout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (required)")
	bootstrap := fs.Bool("bootstrap", false, "print the plan initdb runs in instead (adds a shell for initdb's popen)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: silo-proxy layout --config FILE [--bootstrap] SILO")
		fmt.Fprintln(stderr, "Prints SILO's mount plan, one line per mount: SOURCE -> TARGET ro|rw|tmpfs|proc|dev|file|symlink|dir")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *cfgPath == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		printConfigError(stderr, err)
		return exitFailure
	}
	s := cfg.Silo(fs.Arg(0))
	if s == nil {
		fmt.Fprintf(stderr, "%s: no silo named %q\n", cfg.Path, fs.Arg(0))
		return exitFailure
	}
	inst, err := fslayout.FindInstall(cfg.Postgres.BinDir)
	if err != nil {
		fmt.Fprintf(stderr, "%s: postgres.bindir: %v\n", cfg.Path, err)
		return exitFailure
	}
	spec := planSpec(cfg, s, inst)
	spec.Bootstrap = *bootstrap
	plan, err := fslayout.Build(spec)
	if err != nil {
		fmt.Fprintf(stderr, "silo %s: %v\n", s.Name, err)
		return exitFailure
	}
	fmt.Fprint(stdout, plan.String())
	for _, n := range plan.Notes {
		fmt.Fprintf(stderr, "note: %s\n", n)
	}
	return exitOK
}
