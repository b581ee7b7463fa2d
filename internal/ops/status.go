package ops

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DefaultTimeline is where the boot path leaves its record.
const DefaultTimeline = "/run/spotroot/timeline.log"

// VolumeStatus prints the volume, its attachment and the instance.
func VolumeStatus(ctx context.Context, c EC2, ref string, out io.Writer) error {
	v, err := ResolveVolume(ctx, c, ref)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	printVolume(out, v)
	for _, a := range v.Attachments {
		iid := aws.ToString(a.InstanceId)
		inst, err := describeInstance(ctx, c, iid)
		if err != nil {
			fmt.Fprintf(out, "instance:   %s (%v)\n", iid, err)
			continue
		}
		printInstance(out, inst)
	}
	if len(v.Attachments) == 0 {
		fmt.Fprintln(out, "instance:   none (the volume is free; the next instance that boots with it claims it)")
	}
	return nil
}

// InstanceStatus prints what the instance id knows: its volumes from EC2
// (c may be nil when EC2 is unreachable) and the boot timeline file.
func InstanceStatus(ctx context.Context, c EC2, instanceID, region, timeline string, out io.Writer) error {
	fmt.Fprintf(out, "instance:   %s (%s)\n", instanceID, region)
	var errs []string
	if c != nil {
		vols, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{filter("attachment.instance-id", instanceID)}})
		if err != nil {
			errs = append(errs, fmt.Sprintf("describe volumes attached to %s: %v", instanceID, err))
		} else {
			for _, v := range vols.Volumes {
				if tagMap(v.Tags)[ManagedKey] == "" && tagMap(v.Tags)[VolumeKey] == "" && !hasName(v) {
					continue
				}
				printVolume(out, v)
			}
		}
	}
	b, err := os.ReadFile(timeline)
	if err != nil {
		errs = append(errs, fmt.Sprintf("read boot timeline %s: %v (was this instance booted by spotroot?)", timeline, err))
	} else {
		fmt.Fprintf(out, "last boot (%s):\n", timeline)
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			fmt.Fprintln(out, "  "+l)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("status: %s", strings.Join(errs, "; "))
	}
	return nil
}

func hasName(v types.Volume) bool { return tagMap(v.Tags)["Name"] != "" }

func printVolume(out io.Writer, v types.Volume) {
	t := tagMap(v.Tags)
	fmt.Fprintf(out, "volume:     %s name=%s %s %d GiB in %s, %s\n", aws.ToString(v.VolumeId), t["Name"], v.VolumeType,
		aws.ToInt32(v.Size), aws.ToString(v.AvailabilityZone), v.State)
	for _, a := range v.Attachments {
		fmt.Fprintf(out, "attachment: %s as %s, %s\n", aws.ToString(a.InstanceId), aws.ToString(a.Device), a.State)
	}
}

func printInstance(out io.Writer, i types.Instance) {
	state := ""
	if i.State != nil {
		state = string(i.State.Name)
	}
	az := ""
	if i.Placement != nil {
		az = aws.ToString(i.Placement.AvailabilityZone)
	}
	life := string(i.InstanceLifecycle)
	if life == "" {
		life = "on-demand"
	}
	launched := ""
	if i.LaunchTime != nil {
		launched = i.LaunchTime.UTC().Format("2006-01-02T15:04:05Z")
	}
	fmt.Fprintf(out, "instance:   %s %s %s %s in %s, launched %s\n", aws.ToString(i.InstanceId), state, i.InstanceType, life, az, launched)
}
