package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// statusTimeout bounds the GET /silos request.
const statusTimeout = 5 * time.Second

// cmdStatus prints the running proxy's GET /silos as a table. The admin
// address comes from --admin, else from the admin.address of --config,
// else the built-in default.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file whose admin.address to query")
	admin := fs.String("admin", "", "admin HTTP address (host:port) of the running proxy")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: silo-proxy status [--config FILE | --admin HOST:PORT]")
		fmt.Fprintln(stderr, "Prints the silos of a running proxy; exits 1 when its admin endpoint is unreachable.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 0 || (*cfgPath != "" && *admin != "") {
		fs.Usage()
		return exitUsage
	}
	addr := *admin
	if *cfgPath != "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailure
		}
		addr = cfg.Admin.Address
	}
	if addr == "" {
		addr = config.DefaultAdminAddress
	}
	url := "http://" + addr + "/silos"
	statuses, err := fetchStatuses(url)
	if err != nil {
		fmt.Fprintf(stderr, "silo-proxy status: admin endpoint %s unreachable: %v\n", url, err)
		return exitFailure
	}
	printStatuses(stdout, statuses, time.Now())
	return exitOK
}

func fetchStatuses(url string) ([]spawner.Status, error) {
	client := &http.Client{Timeout: statusTimeout}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	var out []spawner.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("decoding the response: %w", err)
	}
	return out, nil
}

// printStatuses writes the aligned table of silo statuses.
func printStatuses(w io.Writer, statuses []spawner.Status, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tCLIENTS\tRESTARTS\tSTARTED\tDATABASES")
	for _, s := range statuses {
		pid, started := "-", "-"
		if s.Pid != 0 {
			pid = strconv.Itoa(s.Pid)
		}
		if !s.StartedAt.IsZero() {
			started = s.StartedAt.Local().Format("2006-01-02 15:04:05") +
				" (" + now.Sub(s.StartedAt).Truncate(time.Second).String() + " ago)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n",
			s.Name, s.State, pid, s.Clients, s.Restarts, started, strings.Join(s.Databases, ","))
	}
	tw.Flush()
}
