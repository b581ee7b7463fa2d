// Command spotsim serves a simulated-cloud world file for manual poking:
// the EC2 Query API on one port and each instance's IMDS on its own.
//
//	spotsim -world world.json -ec2 127.0.0.1:8250 -imds i-0123456789abcdef0=127.0.0.1:8254
//
// It prints the world's operator key as shell exports, for curl or the AWS
// CLI (--endpoint-url http://127.0.0.1:8250).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
)

// imdsFlags collects -imds INSTANCE=ADDR flags.
type imdsFlags []string

func (f *imdsFlags) String() string     { return strings.Join(*f, ",") }
func (f *imdsFlags) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	worldPath := flag.String("world", "", "world JSON file (created on first change)")
	ec2Addr := flag.String("ec2", "127.0.0.1:0", "EC2 API listen address (loopback only)")
	var imds imdsFlags
	flag.Var(&imds, "imds", "INSTANCE=127.0.0.1:PORT: serve that instance's IMDS (repeatable)")
	verbose := flag.Bool("v", false, "debug logs (every IMDS and Describe call)")
	flag.Parse()
	if err := run(*worldPath, *ec2Addr, imds, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "spotsim:", err)
		os.Exit(1)
	}
}

func run(worldPath, ec2Addr string, imds []string, verbose bool) error {
	if worldPath == "" {
		return errors.New("-world is required")
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	w, err := sim.Load(worldPath)
	if err != nil {
		return err
	}
	s := sim.NewServer(w)
	s.Logger = log
	defer s.Close()
	// The hostile profile (README: "The hostile cloud") is on unless the
	// world file turns behaviours off in Hostile.Off, with reasons.
	log.Info("hostile simulator", "seed", w.HostileSeed(), "off", w.Hostile.Off)

	type endpoint struct {
		name, addr string
		h          http.Handler
	}
	eps := []endpoint{{"ec2", ec2Addr, s.EC2Handler()}}
	for _, spec := range imds {
		id, addr, ok := strings.Cut(spec, "=")
		if !ok {
			return fmt.Errorf("-imds %q: want INSTANCE=ADDR", spec)
		}
		if _, ok := w.Instance(id); !ok {
			log.Warn("instance not in the world (yet)", "instance", id)
		}
		eps = append(eps, endpoint{"imds " + id, addr, s.IMDSHandler(id)})
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, len(eps))
	var running []*http.Server
	defer func() {
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, srv := range running {
			srv.Shutdown(shut)
		}
	}()
	for _, ep := range eps {
		if err := loopbackOnly(ep.addr); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", ep.addr)
		if err != nil {
			return fmt.Errorf("listen %s for %s: %w", ep.addr, ep.name, err)
		}
		log.Info("serving", "what", ep.name, "addr", ln.Addr().String())
		srv := &http.Server{Handler: ep.h, ReadHeaderTimeout: 10 * time.Second}
		running = append(running, srv)
		go func() { errc <- srv.Serve(ln) }()
	}
	op := w.OperatorCredentials()
	fmt.Printf("export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_REGION=%s\n", op.AccessKeyID, op.SecretAccessKey, w.Region)

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// loopbackOnly refuses anything but 127.0.0.1: the simulator must never
// be reachable from the network.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("address %q: only 127.0.0.1 may be bound", addr)
	}
	return nil
}
