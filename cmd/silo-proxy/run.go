package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/silo-proxy/silo-proxy/config"
	"github.com/silo-proxy/silo-proxy/proxy"
	"github.com/silo-proxy/silo-proxy/spawner"
)

// Bounds of the shutdown phases after the grace period: the spawner's own
// stop ladder (fast, immediate, SIGKILL) fits well within them.
const (
	shutdownSlack       = 90 * time.Second
	immediateStopBudget = 20 * time.Second
)

// relayEnv selects the relay of plaintext sessions: loop (the default) or
// goroutines (docs/operations.md).
const relayEnv = "SILO_PROXY_RELAY"

// cmdRun wires config, spawner and proxy together and serves until a
// signal ends it:
//
//	SIGHUP           reload the configuration (so do edits of the file)
//	SIGTERM          stop accepting, let sessions finish for --shutdown-grace,
//	                 then stop the silos smart, escalating to fast
//	SIGINT           stop the silos fast at once
//	a second signal  stop immediately
func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (required)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	grace := fs.Duration("shutdown-grace", 30*time.Second, "on SIGTERM, how long open sessions may continue before the silos are stopped")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: silo-proxy run --config FILE [--log-level LEVEL] [--log-format text|json] [--shutdown-grace 30s]")
		fmt.Fprintln(stderr, "Serves PostgreSQL clients, routing each database to its silo.")
		fmt.Fprintln(stderr, "Environment: "+relayEnv+"=loop|goroutines selects the relay of plaintext sessions (default loop).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *cfgPath == "" || fs.NArg() != 0 || *grace < 0 {
		fs.Usage()
		return exitUsage
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "silo-proxy run: %v\n", err)
		return exitUsage
	}

	relay, err := proxy.ParseRelayMode(os.Getenv(relayEnv))
	if err != nil {
		fmt.Fprintf(stderr, "silo-proxy run: %s: %v\n", relayEnv, err)
		return exitUsage
	}

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	mode, why := spawner.DetectMode()
	log.Info("starting silo-proxy", "version", versionString(), "config", cfg.Path, "silos", len(cfg.Silos),
		"mode", fmt.Sprint(mode), "why", why, "relay", relay.String())

	metrics := proxy.NewMetrics()
	mgr, err := spawner.New(cfg, spawner.Options{Logger: log.With("component", "spawner"), Observer: metrics})
	if err != nil {
		log.Error("cannot start the spawner", "err", err)
		return exitFailure
	}
	srv, err := proxy.New(cfg, mgr, proxy.Options{
		Logger:      log.With("component", "proxy"),
		Metrics:     metrics,
		LoadConfig:  config.Load,
		WatchConfig: true,
		Relay:       relay,
	})
	if err != nil {
		log.Error("cannot start the proxy", "err", err)
		mgr.Shutdown(context.Background(), spawner.StopFast)
		return exitFailure
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if err := srv.Start(); err != nil {
		log.Error("cannot listen", "err", err)
		mgr.Shutdown(context.Background(), spawner.StopFast)
		return exitFailure
	}

	var sig os.Signal
	for sig = range sigs {
		if sig != syscall.SIGHUP {
			break
		}
		log.Info("SIGHUP: reloading the configuration")
		srv.Reload() // logs and counts its own failure
	}

	stopMode, stopGrace := spawner.StopSmart, *grace
	if sig == syscall.SIGINT {
		stopMode, stopGrace = spawner.StopFast, 0
	}
	log.Info("received signal, shutting down", "signal", sig.String(), "mode", stopMode.String(), "grace", stopGrace)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopGrace+shutdownSlack)
		defer cancel()
		done <- srv.Shutdown(ctx, stopMode, stopGrace)
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Error("shutdown finished with errors", "err", err)
				return exitFailure
			}
			log.Info("shut down cleanly")
			return exitOK
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			log.Warn("second signal: immediate shutdown", "signal", sig.String())
			ctx, cancel := context.WithTimeout(context.Background(), immediateStopBudget)
			err := srv.Shutdown(ctx, spawner.StopImmediate, 0)
			cancel()
			if err != nil {
				log.Error("immediate shutdown", "err", err)
			}
			return exitFailure
		}
	}
}

// newLogger builds the process logger from the --log-level and
// --log-format flags.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
