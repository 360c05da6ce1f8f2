package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/silo-proxy/silo-proxy/config"
)

// cmdImportPgSilo converts a pgSilo custom_fs_layout file (and the
// whitelists it names) into the `silos:` section of a silo-proxy config.
func cmdImportPgSilo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("import-pgsilo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: silo-proxy import-pgsilo FILE")
		fmt.Fprintln(stderr, "Prints the YAML silos: section equivalent to a pgSilo custom_fs_layout FILE and its whitelists.")
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	out, err := config.ImportPgSilo(fs.Arg(0))
	if err != nil {
		printConfigError(stderr, err)
		return exitFailure
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	return exitOK
}
