package sim

import (
	"maps"
	"slices"
	"time"
)

// Volume states, as EC2 reports them.
const (
	VolumeCreating  = "creating"
	VolumeAvailable = "available"
	VolumeInUse     = "in-use"
	VolumeDeleting  = "deleting"
)

// Attachment states, as EC2 reports them.
const (
	AttachAttaching = "attaching"
	AttachAttached  = "attached"
	AttachDetaching = "detaching"
)

// Instance states, as EC2 reports them.
const (
	InstancePending      = "pending"
	InstanceRunning      = "running"
	InstanceShuttingDown = "shutting-down"
	InstanceTerminated   = "terminated"
	InstanceStopping     = "stopping"
	InstanceStopped      = "stopped"
)

// instanceStateCodes are the numeric codes EC2 sends next to the state name.
var instanceStateCodes = map[string]int{
	InstancePending:      0,
	InstanceRunning:      16,
	InstanceShuttingDown: 32,
	InstanceTerminated:   48,
	InstanceStopping:     64,
	InstanceStopped:      80,
}

// Volume is an EBS volume. ImagePath is the host file QEMU opens when the
// volume is hot-plugged; it may be empty for API-only tests.
type Volume struct {
	ID          string
	AZ          string
	Type        string
	SizeGiB     int
	Iops        int `json:",omitempty"`
	Throughput  int `json:",omitempty"`
	Encrypted   bool
	Tags        map[string]string
	ImagePath   string
	State       string
	MultiAttach bool
	Attachments []Attachment
	SnapshotID  string
	CreateTime  time.Time
}

// Attachment binds a volume to an instance under a device name.
type Attachment struct {
	InstanceID string
	Device     string
	State      string
	AttachTime time.Time
	// DeleteOnTermination is set for root volumes AddInstance creates, so
	// terminating the instance deletes them like EC2 does.
	DeleteOnTermination bool `json:",omitempty"`
}

// Instance is an EC2 instance. BlockDevices maps device names to volume ids
// (the root is /dev/xvda) and is kept in step with the volumes' attachments.
type Instance struct {
	ID           string
	AZ           string
	ImageID      string
	InstanceType string
	State        string
	Role         string // IAM role name; empty means no instance profile
	UserData     []byte
	Tags         map[string]string
	BlockDevices map[string]string

	PrivateIP  string    // default 169.254.2.15, the slirp DHCP address
	LaunchTime time.Time // default: when added
	Lifecycle  string    // "spot" (default) or "on-demand"
	// MaxAttachments caps attached volumes including the root (default
	// 28, Nitro's limit); the QEMU harness lowers it to its root-port count.
	MaxAttachments int `json:",omitempty"`

	// Credentials are what IMDS hands out for Role; the EC2 API uses the
	// access key id to tell which instance calls.
	Credentials Credentials

	// IMDS knobs.
	IMDSv1Only    bool          `json:",omitempty"` // token PUT answers 403, GETs need no token
	IMDSDelay     time.Duration `json:",omitempty"` // added before every IMDS answer
	IMDSFailFirst int           `json:",omitempty"` // the next N IMDS requests answer 503

	SpotAction *SpotAction `json:",omitempty"` // posted interruption notice
	Rebalance  *time.Time  `json:",omitempty"` // posted rebalance recommendation
	// TargetLifecycleState is the Auto Scaling lifecycle state IMDS shows
	// at autoscaling/target-lifecycle-state (InService, Terminated,
	// Warmed:Stopped, …; "" = not in an Auto Scaling group: 404).
	TargetLifecycleState string `json:",omitempty"`

	// Hostile state (hostile.go).
	// InstanceStore lists the device names the type's local NVMe disks
	// occupy: AttachVolume refuses them, DescribeInstances never lists them.
	InstanceStore []string `json:",omitempty"`
	// HeldDevices are names still reserved after a detach, until when.
	HeldDevices map[string]time.Time `json:",omitempty"`
	// PendingUntil: EC2 says pending until then (set at the first call).
	PendingUntil *time.Time `json:",omitempty"`
	// CredentialsAsked is when IMDS was first asked for credentials.
	CredentialsAsked *time.Time `json:",omitempty"`
	// OldCredentials were rotated out and stay valid until they expire.
	OldCredentials []Credentials `json:",omitempty"`
}

// SpotAction is an interruption notice as IMDS shows it at
// spot/instance-action.
type SpotAction struct {
	Action string // terminate, stop or hibernate
	Time   time.Time
}

// Credentials is an access key pair; Token is empty for long-term keys.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	Token           string `json:",omitempty"`
	Issued          time.Time
	// Expires is when the key stops working; zero = never.
	Expires time.Time `json:",omitempty"`
}

// Snapshot is an EBS snapshot; ImagePath holds its data when it has any.
type Snapshot struct {
	ID          string
	VolumeID    string
	VolumeSize  int
	State       string // pending, completed, error
	Progress    string
	Description string
	StartTime   time.Time
	Tags        map[string]string
	ImagePath   string
}

// Image is an AMI; RootSnapshotID backs its root device.
type Image struct {
	ID             string
	Name           string
	Description    string
	State          string // available, pending, failed, deregistered
	Architecture   string
	RootDeviceName string
	RootSnapshotID string
	CreationDate   time.Time
	Tags           map[string]string
}

// The clone methods give callers copies they may keep without the lock.

func (v *Volume) clone() Volume {
	c := *v
	c.Tags = maps.Clone(v.Tags)
	c.Attachments = slices.Clone(v.Attachments)
	return c
}

func (i *Instance) clone() Instance {
	c := *i
	c.Tags = maps.Clone(i.Tags)
	c.BlockDevices = maps.Clone(i.BlockDevices)
	c.UserData = slices.Clone(i.UserData)
	c.InstanceStore = slices.Clone(i.InstanceStore)
	c.HeldDevices = maps.Clone(i.HeldDevices)
	c.OldCredentials = slices.Clone(i.OldCredentials)
	if i.SpotAction != nil {
		a := *i.SpotAction
		c.SpotAction = &a
	}
	if i.Rebalance != nil {
		t := *i.Rebalance
		c.Rebalance = &t
	}
	return c
}

func (s *Snapshot) clone() Snapshot {
	c := *s
	c.Tags = maps.Clone(s.Tags)
	return c
}

func (m *Image) clone() Image {
	c := *m
	c.Tags = maps.Clone(m.Tags)
	return c
}

// attachment returns the index of instanceID's attachment, or -1.
func (v *Volume) attachment(instanceID string) int {
	for i, a := range v.Attachments {
		if a.InstanceID == instanceID {
			return i
		}
	}
	return -1
}

// removeAttachment drops instanceID's attachment and makes the volume
// available when nothing is left attached.
func (v *Volume) removeAttachment(instanceID string) {
	if i := v.attachment(instanceID); i >= 0 {
		v.Attachments = slices.Delete(v.Attachments, i, i+1)
	}
	if len(v.Attachments) == 0 && v.State == VolumeInUse {
		v.State = VolumeAvailable
	}
}
