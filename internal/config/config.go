// Package config holds spotroot's configuration and parses it from its three
// sources: the kernel command line, cloud-init user-data and a file baked into
// the image. Precedence, highest first: command line, user-data, image file.
package config

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

// Config is the effective configuration of one boot.
type Config struct {
	// Volumes to claim. A volume mounted at "/" becomes the new root.
	Volumes []Volume `yaml:"volumes"`
	// Volume is shorthand for a single root volume.
	Volume *Volume `yaml:"volume"`
	// Init is the real init on the persistent root.
	Init string `yaml:"init"`
	// ImageInit is the image's own init, booted when spotroot is not
	// configured or fails.
	ImageInit string `yaml:"image_init"`
	// EC2Endpoint overrides the regional EC2 endpoint (VPC endpoints, tests).
	EC2Endpoint string   `yaml:"ec2_endpoint"`
	Timeouts    Timeouts `yaml:"timeouts"`
	ForceDetach bool     `yaml:"force_detach"`
	// CrossAZ says what to do with a volume in another AZ: "move" (snapshot
	// and recreate here, the default) or "fail".
	CrossAZ string `yaml:"cross_az"`
	// DeleteMoved deletes the old volume and the snapshot after a move.
	DeleteMoved bool `yaml:"delete_moved"`
	// OnFailure: "image-init" (default) boots the image's own init;
	// "retry-then-image-init" tries the whole claim once more first;
	// "poweroff" stops the instance (a Spot fleet replaces it).
	OnFailure string    `yaml:"on_failure"`
	LogLevel  string    `yaml:"log_level"`
	Disabled  bool      `yaml:"disabled"`
	Interface string    `yaml:"interface"`
	source    sourceSet // which sources contributed, for the log
}

// Volume names one EBS volume and where it goes.
type Volume struct {
	ID   string            `yaml:"id"`
	Tag  map[string]string `yaml:"tag"`
	Pool map[string]string `yaml:"pool"`
	// Mount is "/" for the root (default) or an absolute path for a data volume.
	Mount string `yaml:"mount"`
	// Partition selects the filesystem: a number, "label:NAME" or "partuuid:UUID".
	Partition string `yaml:"partition"`
	FSType    string `yaml:"fstype"`
	Options   string `yaml:"options"`
	// Create makes the volume when none matches (tag or pool only).
	Create *Create `yaml:"create"`
}

// Create describes a volume spotroot makes when none exists yet.
type Create struct {
	SizeGiB    int    `yaml:"size"`
	Type       string `yaml:"type"`
	IOPS       int    `yaml:"iops"`
	Throughput int    `yaml:"throughput"`
	// From is "ami" (the instance's own image's root snapshot), a snap-… id,
	// or "empty" (formatted with the image's mkfs on first boot).
	From string `yaml:"from"`
	// FSType for "empty" (default ext4).
	FSType string `yaml:"fstype"`
}

// Timeouts bound each waiting phase so a boot never hangs.
type Timeouts struct {
	Network Duration `yaml:"network"`
	IMDS    Duration `yaml:"imds"`
	Attach  Duration `yaml:"attach"`
	Device  Duration `yaml:"device"`
	// Detach bounds the wait for a dead instance to release the volume
	// before force_detach (or failure).
	Detach Duration `yaml:"detach"`
	// Create bounds making a volume (snapshot copies across AZs, creation
	// from a snapshot), which takes minutes on real EBS.
	Create Duration `yaml:"create"`
	// Move bounds one boot's wait for a cross-AZ move (the move resumes on
	// the next boot); unset = 5m + 20s per GiB of the volume.
	Move Duration `yaml:"move"`
	// Fsck bounds the filesystem check and identity fixes before a mount.
	// They are never killed mid-write: past it spotroot stops waiting
	// only between steps.
	Fsck Duration `yaml:"fsck"`
}

// Duration parses "30s", "2m" or a bare number of seconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return checkPositive(s, v)
	}
	var secs float64
	if _, err := fmt.Sscanf(s, "%g", &secs); err == nil && fmt.Sprint(secs) == s {
		v := time.Duration(secs * float64(time.Second))
		*d = Duration(v)
		return checkPositive(s, v)
	}
	return fmt.Errorf("%q is not a duration (use e.g. 30s or 2m)", s)
}

func checkPositive(s string, v time.Duration) error {
	if v <= 0 {
		return fmt.Errorf("%q must be positive", s)
	}
	return nil
}

// Defaults are what an operator gets without saying anything.
var Defaults = Config{
	Init: "/sbin/init",
	Timeouts: Timeouts{
		Network: Duration(20 * time.Second),
		IMDS:    Duration(20 * time.Second),
		Attach:  Duration(60 * time.Second),
		Device:  Duration(30 * time.Second),
		Create:  Duration(20 * time.Minute),
		Detach:  Duration(30 * time.Second),
		Fsck:    Duration(10 * time.Minute),
	},
	LogLevel: "info",
}

// ImageInitCandidates are tried, in order, when no image init is configured.
var ImageInitCandidates = []string{"/sbin/init.real", "/lib/systemd/systemd", "/usr/lib/systemd/systemd", "/sbin/init.orig"}

// Configured reports whether there is anything to claim.
func (c *Config) Configured() bool { return !c.Disabled && len(c.Volumes) > 0 }

// Root returns the volume mounted at "/", if any.
func (c *Config) Root() (Volume, bool) {
	for _, v := range c.Volumes {
		if v.Mount == "/" {
			return v, true
		}
	}
	return Volume{}, false
}

// Describe names the volume the way an operator wrote it.
func (v Volume) Describe() string {
	switch {
	case v.ID != "":
		return v.ID
	case len(v.Tag) > 0:
		return "tag " + kvs(v.Tag)
	case len(v.Pool) > 0:
		return "pool " + kvs(v.Pool)
	}
	return "(unnamed volume)"
}

func kvs(m map[string]string) string {
	keys := sortedKeys(m)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// normalize folds the shorthand, fills defaults and validates.
func (c *Config) normalize(where string) error {
	if c.Volume != nil {
		if len(c.Volumes) > 0 {
			return fmt.Errorf("%s: spotroot.volume and spotroot.volumes are exclusive: use one", where)
		}
		c.Volumes = []Volume{*c.Volume}
		c.Volume = nil
	}
	var errs []error
	roots := 0
	for i := range c.Volumes {
		v := &c.Volumes[i]
		field := fmt.Sprintf("spotroot.volumes[%d]", i)
		if v.Mount == "" {
			v.Mount = "/"
		}
		n := 0
		for _, set := range []bool{v.ID != "", len(v.Tag) > 0, len(v.Pool) > 0} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Errorf("%s: %s: name the volume with exactly one of id, tag or pool", where, field))
		}
		if v.ID != "" && !validVolumeID(v.ID) {
			errs = append(errs, fmt.Errorf("%s: %s.id: %q is not a volume id (vol- followed by 8 or 17 hex digits)", where, field, v.ID))
		}
		if !path.IsAbs(v.Mount) || path.Clean(v.Mount) != v.Mount {
			errs = append(errs, fmt.Errorf("%s: %s.mount: must be a clean absolute path, got %q", where, field, v.Mount))
		}
		if v.Mount == "/" {
			roots++
		}
		switch v.FSType {
		case "", "auto", "ext4", "xfs", "btrfs":
		default:
			errs = append(errs, fmt.Errorf("%s: %s.fstype: %q is not one of auto, ext4, xfs, btrfs", where, field, v.FSType))
		}
		if c := v.Create; c != nil {
			if v.ID != "" {
				errs = append(errs, fmt.Errorf("%s: %s.create: a volume named by id cannot be created; name it by tag or pool", where, field))
			}
			switch {
			case c.From == "" || c.From == "ami" || c.From == "empty" || strings.HasPrefix(c.From, "snap-"):
			default:
				errs = append(errs, fmt.Errorf("%s: %s.create.from: %q is not ami, empty or a snap-… id", where, field, c.From))
			}
			if c.From == "empty" && c.SizeGiB <= 0 {
				errs = append(errs, fmt.Errorf("%s: %s.create.size: an empty volume needs a size in GiB", where, field))
			}
			switch c.Type {
			case "", "gp2", "gp3", "io1", "io2", "st1", "sc1", "standard":
			default:
				errs = append(errs, fmt.Errorf("%s: %s.create.type: %q is not an EBS volume type", where, field, c.Type))
			}
			switch c.FSType {
			case "", "ext4", "xfs", "btrfs":
			default:
				errs = append(errs, fmt.Errorf("%s: %s.create.fstype: %q is not one of ext4, xfs, btrfs", where, field, c.FSType))
			}
		}
	}
	if roots > 1 {
		errs = append(errs, fmt.Errorf("%s: more than one volume has mount \"/\"", where))
	}
	for name, p := range map[string]string{"init": c.Init, "image_init": c.ImageInit} {
		if p != "" && !path.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s: spotroot.%s: must be an absolute path, got %q", where, name, p))
		}
	}
	if c.EC2Endpoint != "" && !strings.HasPrefix(c.EC2Endpoint, "http://") && !strings.HasPrefix(c.EC2Endpoint, "https://") {
		errs = append(errs, fmt.Errorf("%s: spotroot.ec2_endpoint: %q must start with http:// or https://", where, c.EC2Endpoint))
	}
	switch c.OnFailure {
	case "", "image-init", "retry-then-image-init", "poweroff":
	default:
		errs = append(errs, fmt.Errorf("%s: spotroot.on_failure: %q is not image-init, retry-then-image-init or poweroff", where, c.OnFailure))
	}
	switch c.CrossAZ {
	case "", "move", "fail":
	default:
		errs = append(errs, fmt.Errorf("%s: spotroot.cross_az: %q is not move or fail", where, c.CrossAZ))
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("%s: spotroot.log_level: %q is not one of debug, info, warn, error", where, c.LogLevel))
	}
	return errors.Join(errs...)
}

func validVolumeID(id string) bool {
	hex, ok := strings.CutPrefix(id, "vol-")
	if !ok || (len(hex) != 8 && len(hex) != 17) {
		return false
	}
	for _, r := range hex {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}
