package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/watch"
)

func init() {
	register(command{name: "watch", summary: "watch IMDS for Spot, rebalance, maintenance and Auto Scaling notices; run hooks, power off cleanly", run: watchCmd})
}

const watchUsage = `usage: spotroot watch [--once] [--interval 2s] [--hooks-dir DIR] [--log-format text|json] [flags]
       spotroot watch --check-ec2

Runs on the persistent root (systemd unit spotroot-watch.service). Every
--interval it reads IMDS (IMDSv2 only, the session token is refreshed before
it expires) for what the AWS node termination handler watches in its IMDS
mode:
  meta-data/spot/instance-action               Spot interruption (terminate, stop, hibernate)
  meta-data/events/recommendations/rebalance   rebalance recommendation
  meta-data/events/maintenance/scheduled       scheduled maintenance events (active ones)
  meta-data/autoscaling/target-lifecycle-state Auto Scaling lifecycle (Terminated, Warmed:*)
Each notice is logged once and the executables in --hooks-dir run in name
order, each within --hook-timeout, with SPOTROOT_KIND (spot, rebalance,
maintenance, autoscaling), SPOTROOT_ACTION, SPOTROOT_TIME (RFC 3339),
SPOTROOT_DEADLINE, SPOTROOT_INSTANCE_ID and SPOTROOT_NOTICE (the raw
document) in their environment. A Spot terminate or stop, and an Auto
Scaling Terminated, then power the machine off cleanly: 'systemctl
poweroff' under systemd, otherwise sync, read-only remounts and reboot(2).
Hooks of a Spot terminate/stop end --shutdown-margin before the
interruption time. Rebalance recommendations and maintenance events run
hooks only (see --rebalance-poweroff). An example hook that posts each
notice to a Slack-style webhook is in /usr/share/doc/spotroot/examples/hooks.

Off EC2 the watcher does not retry forever: when IMDS has not answered for
--not-ec2-after and the DMI data do not say Amazon EC2, it exits with
status 3 (the unit does not restart it). --check-ec2 exits 0 on an EC2
instance (DMI data, else an IMDS token within 10 seconds) and 1
elsewhere: the unit's ExecCondition, so the service is skipped, not failed.
--once polls once, handles what is there and exits: 0 when IMDS answered,
3 when it could not be reached.
`

func watchCmd(args []string, stdio stdio) int {
	fs := newFlags("watch", watchUsage, stdio)
	var o watch.Options
	fs.StringVar(&o.Endpoint, "imds-endpoint", envOr("SPOTROOT_IMDS_ENDPOINT", "auto"), "IMDS base URL (env SPOTROOT_IMDS_ENDPOINT); auto = http://169.254.169.254, or http://[fd00:ec2::254] on a machine without IPv4 or whose IPv4 IMDS is silent")
	fs.DurationVar(&o.Interval, "interval", 2*time.Second, "poll period, 1s to 30s (IMDS notices come two minutes ahead; the node termination handler polls every 2s)")
	fs.StringVar(&o.HooksDir, "hooks-dir", watch.DefaultHooksDir, "directory of hook executables (relative to the current directory if not absolute)")
	fs.DurationVar(&o.HookTimeout, "hook-timeout", 60*time.Second, "time budget of each hook")
	fs.DurationVar(&o.ShutdownMargin, "shutdown-margin", 15*time.Second, "stop hooks this long before a Spot interruption to leave time to power off")
	fs.BoolVar(&o.RebalancePowerOff, "rebalance-poweroff", false, "also power off on a rebalance recommendation")
	fs.DurationVar(&o.GiveUpAfter, "not-ec2-after", time.Minute, "exit (status 3) when IMDS has not answered for this long and the machine is not EC2; 0 = retry forever")
	noPowerOff := fs.Bool("no-poweroff", false, "run hooks but never power off (testing hooks)")
	once := fs.Bool("once", false, "poll once, handle what is there, and exit (3 if IMDS cannot be reached)")
	checkEC2 := fs.Bool("check-ec2", false, "exit 0 if this is an EC2 instance, 1 if not (systemd ExecCondition)")
	logFormat := fs.String("log-format", envOr("SPOTROOT_LOG_FORMAT", "text"), "text or json (one JSON object per line, for log shippers; env SPOTROOT_LOG_FORMAT)")
	if code, done := parseFlags(fs, args, stdio); done {
		return code
	}
	switch {
	case o.Interval < time.Second:
		fmt.Fprintf(stdio.err, "spotroot watch: --interval %v: at least 1s (IMDS notices come two minutes ahead; polling faster only adds load)\n", o.Interval)
		return exitUsage
	case o.Interval > 30*time.Second:
		fmt.Fprintf(stdio.err, "spotroot watch: --interval %v: at most 30s (a Spot notice gives two minutes; polling slower leaves the hooks too little of it)\n", o.Interval)
		return exitUsage
	}
	switch *logFormat {
	case "text":
		o.Log = log.New(stdio.err, "spotroot watch: ", 0)
	case "json":
		o.Log = log.New(jsonLines{slog.New(slog.NewJSONHandler(stdio.err, nil)).With("component", "spotroot-watch")}, "", 0)
	default:
		fmt.Fprintf(stdio.err, "spotroot watch: --log-format %q: use text or json\n", *logFormat)
		return exitUsage
	}
	if *checkEC2 {
		if watch.OnEC2("/") || imdsAnswers(probeEndpoints(o.Endpoint), 10*time.Second) {
			return exitOK
		}
		fmt.Fprintln(stdio.err, "spotroot watch: not an EC2 instance (no Amazon EC2 DMI data, IMDS does not answer): nothing to watch")
		return exitFail
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
		if err := w.Err(); err != nil {
			fmt.Fprintf(stdio.err, "spotroot watch: --once: %v\n", err)
			return exitNoIMDS
		}
		return exitOK
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintf(stdio.err, "spotroot watch: %v\n", err)
		if errors.Is(err, watch.ErrNotEC2) {
			return exitNoIMDS
		}
		return exitFail
	}
	if ctx.Err() == nil {
		// A shutdown is under way: stay until the init system stops us.
		<-ctx.Done()
	}
	return exitOK
}

// jsonLines turns each log line into one JSON record.
type jsonLines struct{ l *slog.Logger }

func (j jsonLines) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		j.l.Info(line)
	}
	return len(p), nil
}

var _ io.Writer = jsonLines{}

// imdsAnswers reports whether an IMDSv2 token PUT succeeds within d,
// trying again every second (the network may just have come up).
// probeEndpoints are the IMDS addresses --check-ec2 asks: "auto" is both
// of EC2's (the IPv4 one, and the IPv6 one of Nitro instances), since the
// probe runs before anything chose.
func probeEndpoints(endpoint string) []string {
	if endpoint == "auto" {
		return []string{imds.DefaultEndpoint, imds.IPv6Endpoint}
	}
	return []string{endpoint}
}

func imdsAnswers(endpoints []string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		for _, endpoint := range endpoints {
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			req, err := http.NewRequestWithContext(actx, http.MethodPut, strings.TrimRight(endpoint, "/")+"/latest/api/token", nil)
			if err != nil {
				acancel()
				return false
			}
			req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
			resp, err := http.DefaultClient.Do(req)
			acancel()
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return true
				}
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
