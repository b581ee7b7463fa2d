package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/watch"
)

func init() {
	register(command{name: "watch", summary: "watch IMDS for Spot interruptions; run hooks, power off cleanly", run: watchCmd})
}

const watchUsage = `usage: spotroot watch [flags]

Runs on the persistent root (systemd unit spotroot-watch.service). Every
--interval it reads IMDS (IMDSv2 only, the session token is refreshed before
it expires) for:
  meta-data/spot/instance-action            Spot interruption (terminate, stop, hibernate)
  meta-data/events/recommendations/rebalance rebalance recommendation
  meta-data/events/maintenance/scheduled    scheduled maintenance events
Each notice is logged once and the executables in --hooks-dir run in name
order, each within --hook-timeout, with SPOTROOT_KIND (spot, rebalance,
maintenance), SPOTROOT_ACTION, SPOTROOT_TIME (RFC 3339), SPOTROOT_DEADLINE and
SPOTROOT_NOTICE (the raw document) in their environment. A Spot terminate or
stop then powers the machine off cleanly: 'systemctl poweroff' under
systemd, otherwise sync, read-only remounts and reboot(2). Hooks of a
terminate/stop end --shutdown-margin before the interruption time.
Rebalance recommendations and maintenance events run hooks only (see
--rebalance-poweroff).

Flags:
`

func watchCmd(args []string, stdio stdio) int {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stdio.err)
	var o watch.Options
	fs.StringVar(&o.Endpoint, "imds-endpoint", envOr("SPOTROOT_IMDS_ENDPOINT", "auto"), "IMDS base URL (env SPOTROOT_IMDS_ENDPOINT); auto = http://169.254.169.254, or http://[fd00:ec2::254] on a machine without IPv4 or whose IPv4 IMDS is silent")
	fs.DurationVar(&o.Interval, "interval", 2*time.Second, "poll period, 2s to 5s")
	fs.StringVar(&o.HooksDir, "hooks-dir", watch.DefaultHooksDir, "directory of hook executables")
	fs.DurationVar(&o.HookTimeout, "hook-timeout", 60*time.Second, "time budget of each hook")
	fs.DurationVar(&o.ShutdownMargin, "shutdown-margin", 15*time.Second, "stop hooks this long before a Spot interruption to leave time to power off")
	fs.BoolVar(&o.RebalancePowerOff, "rebalance-poweroff", false, "also power off on a rebalance recommendation")
	noPowerOff := fs.Bool("no-poweroff", false, "run hooks but never power off (testing hooks)")
	once := fs.Bool("once", false, "poll once, handle what is there, and exit")
	fs.Usage = func() { fmt.Fprint(stdio.err, watchUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if o.Interval < 2*time.Second || o.Interval > 5*time.Second {
		fmt.Fprintf(stdio.err, "spotroot watch: --interval %v: must be between 2s and 5s (IMDS notices give two minutes; polling faster only adds load)\n", o.Interval)
		return 2
	}
	if *noPowerOff {
		o.Shutdown = func(context.Context) error { return fmt.Errorf("not powering off (--no-poweroff)") }
	}
	o.Ready = watch.NotifyReady
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.Endpoint == "auto" {
		o.Endpoint = imds.Choose(ctx, "", imds.LocalNetwork(), imds.DefaultProbe)
	}
	w := watch.New(o)
	if *once {
		w.Poll(ctx)
		return 0
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintf(stdio.err, "spotroot watch: %v\n", err)
		return 1
	}
	if ctx.Err() == nil {
		// A shutdown is under way: stay until the init system stops us.
		<-ctx.Done()
	}
	return 0
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
