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

// VolumeInfo is one volume as status reports it.
type VolumeInfo struct {
	ID          string            `json:"volume_id"`
	Name        string            `json:"name,omitempty"`
	State       string            `json:"state"`
	Type        string            `json:"type"`
	SizeGiB     int32             `json:"size_gib"`
	AZ          string            `json:"availability_zone"`
	Tags        map[string]string `json:"tags,omitempty"`
	Attachments []AttachmentInfo  `json:"attachments"`
}

// AttachmentInfo is one attachment of a volume.
type AttachmentInfo struct {
	InstanceID string `json:"instance_id"`
	Device     string `json:"device"`
	State      string `json:"state"`
}

// InstanceInfo is an instance a volume is attached to.
type InstanceInfo struct {
	ID         string `json:"instance_id"`
	State      string `json:"state"`
	Type       string `json:"instance_type"`
	Lifecycle  string `json:"lifecycle"`
	AZ         string `json:"availability_zone"`
	LaunchTime string `json:"launch_time,omitempty"`
	BootTag    string `json:"boot_tag,omitempty"` // spotroot:boot, set when a boot fell back
	Error      string `json:"error,omitempty"`
}

// VolumeReport is `spotroot status --volume`.
type VolumeReport struct {
	Volume    VolumeInfo     `json:"volume"`
	Instances []InstanceInfo `json:"instances"`
}

// InstanceReport is `spotroot status` on an instance.
type InstanceReport struct {
	InstanceID string       `json:"instance_id"`
	Region     string       `json:"region"`
	AZ         string       `json:"availability_zone,omitempty"`
	Volumes    []VolumeInfo `json:"volumes"`
	// Boot is the last boot's timeline, one entry per line.
	Boot         []string `json:"boot"`
	TimelineFile string   `json:"timeline_file"`
	// BootFailed is the phase of a "FAILED <phase>" line, if the boot fell back.
	BootFailed string   `json:"boot_failed,omitempty"`
	Errors     []string `json:"errors,omitempty"`
}

// VolumeStatus reports the volume, its attachment and the instance.
func VolumeStatus(ctx context.Context, c EC2, ref string) (VolumeReport, error) {
	v, err := ResolveVolume(ctx, c, ref)
	if err != nil {
		return VolumeReport{}, fmt.Errorf("status: %w", err)
	}
	r := VolumeReport{Volume: volumeInfo(v), Instances: []InstanceInfo{}}
	for _, a := range v.Attachments {
		iid := aws.ToString(a.InstanceId)
		inst, err := describeInstance(ctx, c, iid)
		if err != nil {
			r.Instances = append(r.Instances, InstanceInfo{ID: iid, Error: err.Error()})
			continue
		}
		r.Instances = append(r.Instances, instanceInfo(inst))
	}
	return r, nil
}

// PrintVolumeReport writes r as text.
func PrintVolumeReport(out io.Writer, r VolumeReport) {
	printVolume(out, r.Volume)
	for _, i := range r.Instances {
		if i.Error != "" {
			fmt.Fprintf(out, "instance:   %s (%s)\n", i.ID, i.Error)
			continue
		}
		fmt.Fprintf(out, "instance:   %s %s %s %s in %s, launched %s\n", i.ID, i.State, i.Type, i.Lifecycle, i.AZ, i.LaunchTime)
		if i.BootTag != "" {
			fmt.Fprintf(out, "last boot:  %s (spotroot:boot tag; the instance runs its image's own init)\n", i.BootTag)
		}
	}
	if len(r.Instances) == 0 {
		fmt.Fprintln(out, "instance:   none (the volume is free; the next instance that boots with it claims it)")
	}
}

// InstanceStatus reports what the instance knows: its volumes from EC2
// (c may be nil when EC2 is unreachable) and the boot timeline file. The
// report is filled as far as it goes; err says what could not be read.
func InstanceStatus(ctx context.Context, c EC2, instanceID, region, az, timeline string) (InstanceReport, error) {
	r := InstanceReport{InstanceID: instanceID, Region: region, AZ: az, TimelineFile: timeline, Volumes: []VolumeInfo{}, Boot: []string{}}
	if c != nil {
		vols, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{filter("attachment.instance-id", instanceID)}})
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("describe volumes attached to %s: %v", instanceID, err))
		} else {
			for _, v := range vols.Volumes {
				if tagMap(v.Tags)[ManagedKey] == "" && tagMap(v.Tags)[VolumeKey] == "" && !hasName(v) {
					continue
				}
				r.Volumes = append(r.Volumes, volumeInfo(v))
			}
		}
	}
	b, err := os.ReadFile(timeline)
	if err != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("read boot timeline %s: %v (was this instance booted by spotroot?)", timeline, err))
	} else {
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			r.Boot = append(r.Boot, l)
			if _, after, ok := strings.Cut(l, "FAILED "); ok {
				r.BootFailed, _, _ = strings.Cut(after, ":")
			}
		}
	}
	if len(r.Errors) > 0 {
		return r, fmt.Errorf("status: %s", strings.Join(r.Errors, "; "))
	}
	return r, nil
}

// PrintInstanceReport writes r as text.
func PrintInstanceReport(out io.Writer, r InstanceReport) {
	fmt.Fprintf(out, "instance:   %s (%s)\n", r.InstanceID, r.Region)
	for _, v := range r.Volumes {
		printVolume(out, v)
	}
	if len(r.Boot) > 0 {
		fmt.Fprintf(out, "last boot (%s):\n", r.TimelineFile)
		for _, l := range r.Boot {
			fmt.Fprintln(out, "  "+l)
		}
	}
	if r.BootFailed != "" {
		fmt.Fprintf(out, "boot:       FAILED in phase %s: this instance runs its image's own init\n", r.BootFailed)
	}
}

func hasName(v types.Volume) bool { return tagMap(v.Tags)["Name"] != "" }

func volumeInfo(v types.Volume) VolumeInfo {
	t := tagMap(v.Tags)
	vi := VolumeInfo{ID: aws.ToString(v.VolumeId), Name: t["Name"], State: string(v.State), Type: string(v.VolumeType),
		SizeGiB: aws.ToInt32(v.Size), AZ: aws.ToString(v.AvailabilityZone), Tags: t, Attachments: []AttachmentInfo{}}
	for _, a := range v.Attachments {
		vi.Attachments = append(vi.Attachments, AttachmentInfo{InstanceID: aws.ToString(a.InstanceId), Device: aws.ToString(a.Device), State: string(a.State)})
	}
	return vi
}

func printVolume(out io.Writer, v VolumeInfo) {
	fmt.Fprintf(out, "volume:     %s name=%s %s %d GiB in %s, %s\n", v.ID, v.Name, v.Type, v.SizeGiB, v.AZ, v.State)
	for _, a := range v.Attachments {
		fmt.Fprintf(out, "attachment: %s as %s, %s\n", a.InstanceID, a.Device, a.State)
	}
}

func instanceInfo(i types.Instance) InstanceInfo {
	ii := InstanceInfo{ID: aws.ToString(i.InstanceId), Type: string(i.InstanceType), Lifecycle: string(i.InstanceLifecycle)}
	if i.State != nil {
		ii.State = string(i.State.Name)
	}
	if i.Placement != nil {
		ii.AZ = aws.ToString(i.Placement.AvailabilityZone)
	}
	if ii.Lifecycle == "" {
		ii.Lifecycle = "on-demand"
	}
	if i.LaunchTime != nil {
		ii.LaunchTime = i.LaunchTime.UTC().Format("2006-01-02T15:04:05Z")
	}
	ii.BootTag = tagMap(i.Tags)[BootTagKey]
	return ii
}
