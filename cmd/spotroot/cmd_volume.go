package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spotroot/spotroot/internal/ops"
)

func init() {
	register(command{name: "volume", summary: "create the persistent EBS volume (volume create)", run: volumeCmd})
}

const volumeUsage = `usage: spotroot volume create (--from-instance i-… | --from-snapshot snap-… | --size N --empty)
                              --name NAME [--pool P] [--az AZ] [--type gp3] [--timeout 2h]
                              [--output text|json] [--dry-run]

Creates the persistent volume an instance boots from. --from-instance
snapshots that instance's root volume and creates the volume from the
snapshot (in the instance's zone unless --az); --from-snapshot uses an
existing snapshot (waiting for it if it is still pending); --empty creates
a blank volume of --size GiB. The volume is tagged Name=NAME,
spotroot:volume=NAME, spotroot:managed=true (and spotroot:pool=P), which is
what the user-data and the IAM policy refer to.

Progress goes to standard error: the snapshot's percentage with the time
elapsed and an estimate of the time left. The result (the volume id, or
with --output json the volume, snapshot, zone and tags) goes to standard
output, so VOL=$(spotroot volume create …) captures only the id. When
--timeout passes first, the snapshot or volume keeps going in EC2: the
exit status is 4 and the command to pick up from there is printed.
--dry-run prints the plan without creating anything.
`

func volumeCmd(args []string, stdio stdio) int {
	fs := newFlags("volume create", volumeUsage, stdio)
	var a ops.AWSFlags
	a.Register(fs)
	var o ops.VolumeCreateOpts
	fs.StringVar(&o.FromInstance, "from-instance", "", "snapshot this instance's root volume")
	fs.StringVar(&o.FromSnapshot, "from-snapshot", "", "create the volume from this snapshot")
	fs.BoolVar(&o.Empty, "empty", false, "create an empty volume (with --size)")
	size := fs.Int("size", 0, "size in GiB (default: the source's)")
	fs.StringVar(&o.Name, "name", "", "the volume's name (Name tag)")
	fs.StringVar(&o.Pool, "pool", "", "pool of interchangeable volumes this one belongs to")
	fs.StringVar(&o.AZ, "az", "", "availability zone (default: the instance's)")
	fs.StringVar(&o.Type, "type", "gp3", "EBS volume type")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print the plan, create nothing")
	fs.StringVar(&o.TagKey, "tag-key", "", "also tag the volume K=V (the --tag-key of spotroot iam-policy and launch; spotroot:managed=true is always set)")
	fs.StringVar(&o.TagValue, "tag-value", "", "its value")
	output := outputFlag(fs)
	timeout := fs.Duration("timeout", 2*time.Hour, "give up waiting for the snapshot and volume after this long (they keep going in EC2)")
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) == 0 {
			return subcommandError("volume", args, []string{"create"}, stdio)
		}
		return must(parseFlags(fs, []string{"--help"}, stdio))
	}
	if args[0] != "create" {
		return subcommandError("volume", args, []string{"create"}, stdio)
	}
	if code, done := parseFlags(fs, args[1:], stdio); done {
		return code
	}
	if !checkOutput("volume create", *output, stdio) {
		return exitUsage
	}
	o.SizeGiB = int32(*size)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if !ops.OperatorBuild {
		fmt.Fprintf(stdio.err, "spotroot volume create: %v\n", ops.ErrPID1Build)
		return exitFail
	}
	c, region, err := a.Client(ctx)
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot volume create: %v\n", err)
		return exitFail
	}
	res, err := ops.CreateVolume(ctx, c, region, o, stdio.err)
	var wt *ops.WaitTimeout
	if errors.As(err, &wt) {
		fmt.Fprintf(stdio.err, "spotroot volume create: %v\n", err)
		if *output == "json" {
			writeJSON(stdio.out, map[string]any{"result": res, "timeout": true, "resume": wt.Resume})
		}
		return exitTimeout
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot volume create: %v\n", err)
		return exitFail
	}
	switch {
	case *output == "json":
		writeJSON(stdio.out, res)
	case res.DryRun:
		fmt.Fprintf(stdio.out, "plan for volume %s in %s (dry run; nothing is created):\n", res.Name, res.AZ)
		for i, p := range res.Plan {
			fmt.Fprintf(stdio.out, "  %d. %s\n", i+1, p)
		}
		fmt.Fprintf(stdio.out, "  then print the volume id; instances claim it with user-data from: %s\n", res.UserData)
	default:
		fmt.Fprintln(stdio.out, res.VolumeID)
		fmt.Fprintf(stdio.err, "volume %s (%s, %d GiB %s in %s) is ready; user-data: %s\n", res.VolumeID, res.Name, res.SizeGiB,
			res.Type, res.AZ, strings.TrimSpace(res.UserData))
	}
	return exitOK
}
