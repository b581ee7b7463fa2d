package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/imds"
	"github.com/spotroot/spotroot/internal/ops"
)

func init() {
	register(command{name: "status", summary: "show the volume, its instance and the last boot", run: statusCmd})
}

const statusUsage = `usage: spotroot status [--output text|json] [--timeline FILE] [--imds-endpoint URL|auto]
       spotroot status --volume NAME|vol-… [--output text|json] [--region R] [--profile P]

On an instance (no --volume; works in the image build): reads the instance
identity from IMDS (IMDSv2), lists the spotroot volumes attached to it with
the instance profile's credentials and prints the last boot's timeline from
/run/spotroot/timeline.log, and whether the boot fell back to the image's
own init. Exit status 3 when IMDS cannot be reached (not on EC2).

From outside (--volume; the operator build): the volume, its attachment
state, the instance it is attached to, and the instance's spotroot:boot
tag (set when a boot fell back).
`

func statusCmd(args []string, stdio stdio) int {
	fs := newFlags("status", statusUsage, stdio)
	var a ops.AWSFlags
	a.Register(fs)
	volume := fs.String("volume", "", "the volume's Name tag or vol-… id (from outside the instance)")
	timeline := fs.String("timeline", ops.DefaultTimeline, "the boot timeline file (on the instance)")
	imdsEndpoint := fs.String("imds-endpoint", envOr("SPOTROOT_IMDS_ENDPOINT", "auto"), "IMDS base URL (env SPOTROOT_IMDS_ENDPOINT); auto = http://169.254.169.254, or http://[fd00:ec2::254] on a machine without IPv4 or whose IPv4 IMDS is silent")
	output := outputFlag(fs)
	if code, done := parseFlags(fs, args, stdio); done {
		return code
	}
	if !checkOutput("status", *output, stdio) {
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if *volume != "" {
		if !ops.OperatorBuild {
			fmt.Fprintf(stdio.err, "spotroot status: %v\n", ops.ErrPID1Build)
			return exitFail
		}
		c, _, err := a.Client(ctx)
		if err != nil {
			fmt.Fprintf(stdio.err, "spotroot status: %v\n", err)
			return exitFail
		}
		r, err := ops.VolumeStatus(ctx, c, *volume)
		if err != nil {
			fmt.Fprintf(stdio.err, "spotroot status: %v\n", err)
			return exitFail
		}
		if *output == "json" {
			writeJSON(stdio.out, r)
		} else {
			ops.PrintVolumeReport(stdio.out, r)
		}
		return exitOK
	}
	// On an IPv6-only subnet both IMDS and EC2 are reached over IPv6, as
	// the boot reaches them: IMDS at [fd00:ec2::254], EC2 by its
	// dual-stack name (the IPv4 endpoint has no IPv6 address).
	local := imds.LocalNetwork()
	if *imdsEndpoint == "auto" {
		*imdsEndpoint = imds.Choose(ctx, "", local, imds.DefaultProbe)
	}
	ic := imds.New(*imdsEndpoint, nil)
	ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
	id, err := ic.Identity(ictx)
	icancel()
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot status: %v\n(not on an EC2 instance? pass --volume NAME|vol-… to ask EC2 instead)\n", err)
		return exitNoIMDS
	}
	region := id.Region
	if a.Region != "" {
		region = a.Region
	}
	// The instance profile's credentials, as the boot uses them: the same
	// in the PID 1 build (no default credential chain) and the operator build.
	c := claim.NewClient(claim.ClientOptions{Region: region, Endpoint: a.Endpoint, IMDS: ic.SDK(), DualStack: !local.IPv4,
		ClockOffset: ic.ClockOffset})
	r, err := ops.InstanceStatus(ctx, c, id.InstanceID, region, id.AZ, *timeline)
	if *output == "json" {
		writeJSON(stdio.out, r)
	} else {
		ops.PrintInstanceReport(stdio.out, r)
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot status: %v\n", err)
		return exitFail
	}
	return exitOK
}
