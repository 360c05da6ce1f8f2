package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/fslayout"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// cmdCheck validates a configuration the way `run` and a reload would, and
// also computes every silo's mount plan, so a file that passes check starts.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (required)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: silo-proxy check --config FILE")
		fmt.Fprintln(stderr, "Validates FILE, prints one line per silo, and exits 0 when valid, 1 when not.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *cfgPath == "" || fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		printConfigError(stderr, err)
		return exitFailure
	}

	mode, why := spawner.DetectMode()
	fmt.Fprintf(stdout, "%s: valid, %d silo(s)\n", cfg.Path, len(cfg.Silos))
	fmt.Fprintf(stdout, "mode: %s (%s)\n", mode, why)

	inst, err := fslayout.FindInstall(cfg.Postgres.BinDir)
	if err != nil {
		fmt.Fprintf(stderr, "%s: postgres.bindir: %v\n", cfg.Path, err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "postgres: %s (PostgreSQL %s)\n", inst.BinDir, inst.Major)

	failed := false
	for i := range cfg.Silos {
		s := &cfg.Silos[i]
		plan, perr := fslayout.Build(planSpec(cfg, s, inst))
		fmt.Fprintf(stdout, "silo %-16s databases=%s layout=%s mounts=%d limits=%s network=%s seccomp=%s mode=%s\n",
			s.Name, strings.Join(s.Databases, ","), s.Layout, len(s.Mounts), formatLimits(s.Limits), s.Network, s.Seccomp, mode)
		if perr != nil {
			fmt.Fprintf(stderr, "silo %s: %v\n", s.Name, perr)
			failed = true
			continue
		}
		for _, n := range plan.Notes {
			fmt.Fprintf(stdout, "  note: %s\n", n)
		}
	}
	if mode == spawner.ModeUnavailable {
		fmt.Fprintln(stderr, "silos cannot run on this host:", why)
		return exitFailure
	}
	if failed {
		return exitFailure
	}
	return exitOK
}

// planSpec is the fslayout input for silo s of cfg.
func planSpec(cfg *config.Config, s *config.Silo, inst fslayout.Install) fslayout.Spec {
	p := cfg.Paths(s.Name)
	return fslayout.Spec{
		Silo:      s.Name,
		Layout:    s.Layout,
		Install:   inst,
		DataDir:   p.Data,
		SocketDir: p.Run,
		Mounts:    s.Mounts,
	}
}

func formatLimits(l config.Limits) string {
	var parts []string
	if l.MemoryBytes > 0 {
		parts = append(parts, "memory="+config.FormatSize(l.MemoryBytes))
	}
	if l.CPU > 0 {
		parts = append(parts, fmt.Sprintf("cpu=%g", l.CPU))
	}
	if l.Pids > 0 {
		parts = append(parts, fmt.Sprintf("pids=%d", l.Pids))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// printConfigError prints every problem of a validation error on its own
// line, or the error itself.
func printConfigError(w io.Writer, err error) {
	var ve *config.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Fprintln(w, p.String())
		}
		fmt.Fprintf(w, "%d problem(s) found\n", len(ve.Problems))
		return
	}
	fmt.Fprintln(w, err)
}
