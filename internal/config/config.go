// Package config holds spotroot's configuration and parses it from its three
// sources: the kernel command line, cloud-init user-data and a file baked into
// the image. Precedence, highest first: command line, user-data, image file.
package config

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
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
	// TagClaims tags a claimed pool member spotroot:instance=<id>: one more
	// mutating call per boot, which the attachment already says while the
	// instance lives; the tag keeps the last holder after it is gone.
	TagClaims bool `yaml:"tag_claims"`
	// OnFailure: "image-init" (default) boots the image's own init;
	// "retry-then-image-init" tries the whole claim once more first;
	// "poweroff" stops the instance (a Spot fleet replaces it).
	OnFailure string `yaml:"on_failure"`
	// IMDS is how the metadata service is reached: "" (auto: IPv4, or
	// [fd00:ec2::254] when the instance has no IPv4 or 169.254.169.254 does
	// not answer), "ipv4" or "ipv6". Read before user-data exists, so it
	// takes effect from the image file or the command line (spotroot.imds=).
	IMDS      string    `yaml:"imds"`
	LogLevel  string    `yaml:"log_level"`
	Disabled  bool      `yaml:"disabled"`
	Interface string    `yaml:"interface"`
	source    sourceSet // which sources contributed, for the log
	warnings  []string
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
	SizeGiB    int    `yaml:"size" json:"size,omitempty"`
	Type       string `yaml:"type" json:"type,omitempty"`
	IOPS       int    `yaml:"iops" json:"iops,omitempty"`
	Throughput int    `yaml:"throughput" json:"throughput,omitempty"`
	// From is "ami" (the instance's own image's root snapshot), a snap-… id,
	// or "empty" (formatted with the image's mkfs on first boot).
	From string `yaml:"from" json:"from,omitempty"`
	// FSType for "empty" (default ext4).
	FSType string `yaml:"fstype" json:"fstype,omitempty"`
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

// Warnings are things the sources say that cloud-init reads differently.
func (c *Config) Warnings() []string { return c.warnings }

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

// fieldErr is a semantic error about one field, before it gets its line.
type fieldErr struct {
	field string // e.g. spotroot.volumes[1].mount
	msg   string
}

// normalize folds the shorthand, fills defaults and validates. node is the
// spotroot mapping the layer was decoded from (nil for the kernel command
// line): every error carries the line of the field it is about.
func (c *Config) normalize(where string, node *yaml.Node) error {
	shorthand := false
	if c.Volume != nil {
		if len(c.Volumes) > 0 {
			return withLine(where, node, fieldErr{"spotroot.volume", "spotroot.volume and spotroot.volumes are exclusive: use one"})
		}
		c.Volumes = []Volume{*c.Volume}
		c.Volume = nil
		shorthand = true
	}
	var errs []fieldErr
	add := func(field, format string, a ...any) {
		errs = append(errs, fieldErr{field, fmt.Sprintf(format, a...)})
	}
	mounts := map[string]int{}
	for i := range c.Volumes {
		v := &c.Volumes[i]
		field := fmt.Sprintf("spotroot.volumes[%d]", i)
		if shorthand {
			field = "spotroot.volume"
		}
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
			add(field, "name the volume with exactly one of id, tag or pool")
		}
		if v.ID != "" && !validVolumeID(v.ID) {
			add(field+".id", "%q is not a volume id (vol- followed by 8 or 17 hex digits)", v.ID)
		}
		if !path.IsAbs(v.Mount) || path.Clean(v.Mount) != v.Mount {
			add(field+".mount", "must be a clean absolute path, got %q", v.Mount)
		} else if j, dup := mounts[v.Mount]; dup {
			add(field+".mount", "%q is also the mount point of spotroot.volumes[%d]: one volume per mount point", v.Mount, j)
		} else {
			mounts[v.Mount] = i
		}
		switch v.FSType {
		case "", "auto", "ext4", "xfs", "btrfs":
		default:
			add(field+".fstype", "%q is not one of auto, ext4, xfs, btrfs", v.FSType)
		}
		if cr := v.Create; cr != nil {
			if v.ID != "" {
				add(field+".create", "a volume named by id cannot be created; name it by tag or pool")
			}
			switch {
			case cr.From == "" || cr.From == "ami" || cr.From == "empty" || strings.HasPrefix(cr.From, "snap-"):
			default:
				add(field+".create.from", "%q is not ami, empty or a snap-… id", cr.From)
			}
			if cr.From == "empty" && cr.SizeGiB <= 0 {
				add(field+".create.size", "an empty volume needs a size in GiB")
			}
			switch cr.Type {
			case "", "gp2", "gp3", "io1", "io2", "st1", "sc1", "standard":
			default:
				add(field+".create.type", "%q is not an EBS volume type", cr.Type)
			}
			switch cr.FSType {
			case "", "ext4", "xfs", "btrfs":
			default:
				add(field+".create.fstype", "%q is not one of ext4, xfs, btrfs", cr.FSType)
			}
		}
	}
	for _, f := range []struct{ name, p string }{{"init", c.Init}, {"image_init", c.ImageInit}} {
		if f.p != "" && !path.IsAbs(f.p) {
			add("spotroot."+f.name, "must be an absolute path, got %q", f.p)
		}
	}
	switch {
	case c.EC2Endpoint == "":
	case !strings.HasPrefix(c.EC2Endpoint, "http://") && !strings.HasPrefix(c.EC2Endpoint, "https://"):
		add("spotroot.ec2_endpoint", "%q must start with http:// or https://", c.EC2Endpoint)
	case strings.HasPrefix(where, "user-data") && strings.HasPrefix(c.EC2Endpoint, "http://"):
		// Whoever can change user-data (ec2:ModifyInstanceAttribute) must
		// not be able to point the instance's signed calls, and the
		// answers it trusts about which volume to boot, at a plain-HTTP
		// server. Tests and local proxies set http:// where only the
		// image's owner can: the kernel command line or the image config.
		add("spotroot.ec2_endpoint", "%q: user-data may only name an https:// endpoint; set a plain http:// endpoint on the kernel command line (spotroot.ec2_endpoint=) or in the image's /etc/spotroot/config.yaml", c.EC2Endpoint)
	}
	switch c.OnFailure {
	case "", "image-init", "retry-then-image-init", "poweroff":
	default:
		add("spotroot.on_failure", "%q is not image-init, retry-then-image-init or poweroff", c.OnFailure)
	}
	switch c.CrossAZ {
	case "", "move", "fail":
	default:
		add("spotroot.cross_az", "%q is not move or fail", c.CrossAZ)
	}
	switch c.IMDS {
	case "", "auto", "ipv4", "ipv6":
	default:
		add("spotroot.imds", "%q is not auto, ipv4 or ipv6", c.IMDS)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		add("spotroot.log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	return withLine(where, node, errs...)
}

// withLine turns field errors into errors that name the source and the
// line of the field (or of its nearest parent that is written down).
func withLine(where string, node *yaml.Node, errs ...fieldErr) error {
	var out []error
	for _, e := range errs {
		if line := lineOf(node, e.field); line > 0 {
			out = append(out, fmt.Errorf("%s line %d: %s: %s", where, line, e.field, e.msg))
		} else {
			out = append(out, fmt.Errorf("%s: %s: %s", where, e.field, e.msg))
		}
	}
	return errors.Join(out...)
}

// fieldPart compiles when an error needs its line (lazyRegexp).
var fieldPart = lazyRegexp(`^([a-z_]+)(?:\[(\d+)\])?$`)

// lineOf finds the line of a field path like spotroot.volumes[1].mount
// under the spotroot mapping node; 0 when there is no node.
func lineOf(node *yaml.Node, field string) int {
	if node == nil {
		return 0
	}
	line := node.Line
	cur := node
	parts := strings.Split(strings.TrimPrefix(field, "spotroot."), ".")
	for _, p := range parts {
		m := fieldPart().FindStringSubmatch(p)
		if m == nil || cur.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(cur.Content); i += 2 {
			if cur.Content[i].Value == m[1] {
				line, next = cur.Content[i].Line, cur.Content[i+1]
			}
		}
		if next == nil {
			return line
		}
		cur = next
		if m[2] != "" {
			idx, _ := strconv.Atoi(m[2])
			if cur.Kind != yaml.SequenceNode || idx >= len(cur.Content) {
				return line
			}
			cur = cur.Content[idx]
			line = cur.Line
		}
	}
	return line
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
