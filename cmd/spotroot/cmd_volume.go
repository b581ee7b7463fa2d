package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/spotroot/spotroot/internal/ops"
)

func init() {
	register(command{name: "volume", summary: "create the persistent EBS volume (volume create)", run: volumeCmd})
}

const volumeUsage = `usage: spotroot volume create (--from-instance i-… | --from-snapshot snap-… | --size N --empty)
                              --name NAME [--pool P] [--az AZ] [--type gp3] [--dry-run]

Creates the persistent volume an instance boots from. --from-instance
snapshots that instance's root volume and creates the volume from the
snapshot (in the instance's zone unless --az); --from-snapshot uses an
existing snapshot; --empty creates a blank volume of --size GiB. The volume is
tagged Name=NAME, spotroot:volume=NAME, spotroot:managed=true (and
spotroot:pool=P), which is what the user-data and the IAM policy refer to.
Waits until the volume is available and prints its id. --dry-run prints the
plan without creating anything.

Flags:
`

func volumeCmd(args []string, stdio stdio) int {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprint(stdio.err, volumeUsage)
		if len(args) > 0 && wantsHelp(args[:1]) {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("volume create", flag.ContinueOnError)
	fs.SetOutput(stdio.err)
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
	timeout := fs.Duration("timeout", 30*time.Minute, "give up waiting for the snapshot and volume after this long")
	fs.Usage = func() { fmt.Fprint(stdio.err, volumeUsage); fs.PrintDefaults() }
	if code, done := parse(fs, args[1:]); done {
		return code
	}
	o.SizeGiB = int32(*size)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, region, err := a.Client(ctx)
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot volume create: %v\n", err)
		return 1
	}
	if _, err := ops.CreateVolume(ctx, c, region, o, stdio.out); err != nil {
		fmt.Fprintf(stdio.err, "spotroot volume create: %v\n", err)
		return 1
	}
	return 0
}
