package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/ops"
)

func init() {
	register(command{name: "status", summary: "show the volume, its instance and the last boot", run: statusCmd})
}

const statusUsage = `usage: spotroot status [--volume NAME|vol-…] [--timeline FILE]

On an instance (no --volume): reads the instance identity from IMDS (IMDSv2),
lists the spotroot volumes attached to it and prints the last boot's
timeline from /run/spotroot/timeline.log. From outside (--volume): the
volume, its attachment state and the instance it is attached to.

Flags:
`

func statusCmd(args []string, stdio stdio) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stdio.err)
	var a ops.AWSFlags
	a.Register(fs)
	volume := fs.String("volume", "", "the volume's Name tag or vol-… id (from outside the instance)")
	timeline := fs.String("timeline", ops.DefaultTimeline, "the boot timeline file (on the instance)")
	imdsEndpoint := fs.String("imds-endpoint", envOr("SPOTROOT_IMDS_ENDPOINT", imds.DefaultEndpoint), "IMDS base URL")
	fs.Usage = func() { fmt.Fprint(stdio.err, statusUsage); fs.PrintDefaults() }
	if code, done := parse(fs, args); done {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if *volume != "" {
		c, _, err := a.Client(ctx)
		if err == nil {
			err = ops.VolumeStatus(ctx, c, *volume, stdio.out)
		}
		if err != nil {
			fmt.Fprintf(stdio.err, "spotroot status: %v\n", err)
			return 1
		}
		return 0
	}
	ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
	id, err := imds.New(*imdsEndpoint, nil).Identity(ictx)
	icancel()
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot status: %v\n(not on an EC2 instance? pass --volume NAME|vol-… to ask EC2 instead)\n", err)
		return 1
	}
	if a.Region == "" {
		a.Region = id.Region
	}
	c, _, cerr := a.Client(ctx)
	var e ops.EC2
	if cerr == nil {
		e = c
	}
	err = ops.InstanceStatus(ctx, e, id.InstanceID, id.Region, *timeline, stdio.out)
	if cerr != nil || err != nil {
		fmt.Fprintf(stdio.err, "spotroot status: %v %v\n", cerr, err)
		return 1
	}
	return 0
}
