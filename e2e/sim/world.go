package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// DefaultRegion is the region of a fresh world.
const DefaultRegion = "us-east-1"

// defaultMaxAttachments is the Nitro limit of attachments per instance
// (EBS volumes plus network interfaces; we only count volumes).
const defaultMaxAttachments = 28

// World is the whole simulated account. Exported fields are persisted;
// change them through Update (or the helpers) so the lock is held and the
// file is rewritten.
type World struct {
	Region    string
	AccountID string

	Instances map[string]*Instance
	Volumes   map[string]*Volume
	Snapshots map[string]*Snapshot
	Images    map[string]*Image

	// Subnets default to one default-VPC subnet per zone a–c.
	Subnets         map[string]*Subnet         `json:",omitempty"`
	SpotRequests    map[string]*SpotRequest    `json:",omitempty"`
	LaunchTemplates map[string]*LaunchTemplate `json:",omitempty"`

	// Faults makes EC2 actions (keyed by action name, or the Fault* pseudo
	// actions for the asynchronous hot-plug) fail or stall.
	Faults map[string]Fault
	// DenyActions answers UnauthorizedOperation for these actions
	// ("AttachVolume" or "ec2:AttachVolume").
	DenyActions []string
	// RolePolicies maps an IAM role name to its policy document (JSON),
	// evaluated for every EC2 call made with that role's credentials
	// (iam.go). A role without one is unrestricted.
	RolePolicies map[string]string `json:",omitempty"`
	// FaultsFired counts the faults that hit a call (see faults.go).
	FaultsFired map[string]int `json:",omitempty"`

	// AttachLatency and DetachLatency delay the asynchronous half of
	// AttachVolume/DetachVolume, before the hot-plug call.
	AttachLatency time.Duration `json:",omitempty"`
	DetachLatency time.Duration `json:",omitempty"`
	// CreateLatency delays creating→available for CreateVolume and
	// pending→completed for CreateSnapshot.
	CreateLatency time.Duration `json:",omitempty"`
	// DataDir receives image files for CreateVolume/CreateSnapshot; when
	// empty those resources have no backing file.
	DataDir string `json:",omitempty"`

	// DataLoss lists operations that would lose data on real EBS (see
	// DataLossEvent); ClientTokens makes CreateVolume idempotent.
	DataLoss     []DataLossEvent           `json:",omitempty"`
	ClientTokens map[string]ClientTokenUse `json:",omitempty"`

	// Operator is a long-term key for tests and the harness: the EC2 API
	// accepts it without tying the call to an instance.
	Operator Credentials

	// Hostile is the bad-day profile (hostile.go); Load turns it on.
	Hostile *Hostile `json:",omitempty"`

	path string
	mu   sync.Mutex

	// Hostile's runtime state, guarded by mu.
	rng      *rand.Rand
	hist     *worldHistory
	backdate bool // the next record treats new resources as old (Add*)
	buckets  map[string]*bucket
	stats    HostileStats
	tokens   map[string]string // CreateVolume ClientToken → volume id
}

// Load reads the world in path. A missing file gives an empty world in
// DefaultRegion; path "" gives an in-memory world that Save ignores.
func Load(path string) (*World, error) {
	w := &World{path: path}
	read := false
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("load world: %w", err)
		default:
			if err := json.Unmarshal(b, w); err != nil {
				return nil, fmt.Errorf("load world %s: %w", path, err)
			}
			read = true
		}
	}
	w.fillDefaults()
	// Keys and ids generated for a hand-written file must survive restarts
	// (a VM may hold them), so write back what we filled in. An absent file
	// stays absent until the first change.
	if read {
		if err := w.saveLocked(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func (w *World) fillDefaults() {
	if w.Region == "" {
		w.Region = DefaultRegion
	}
	if w.AccountID == "" {
		w.AccountID = "123456789012"
	}
	if w.Instances == nil {
		w.Instances = map[string]*Instance{}
	}
	if w.Volumes == nil {
		w.Volumes = map[string]*Volume{}
	}
	if w.Snapshots == nil {
		w.Snapshots = map[string]*Snapshot{}
	}
	if w.Images == nil {
		w.Images = map[string]*Image{}
	}
	if w.Faults == nil {
		w.Faults = map[string]Fault{}
	}
	if w.Hostile == nil {
		w.Hostile = DefaultHostile(SeedFromEnv())
	}
	w.launchDefaults()
	if w.Operator.AccessKeyID == "" {
		w.Operator = newCredentials("AKIA", false)
	}
	// Fill in what a hand-written world file leaves out.
	for id, v := range w.Volumes {
		v.ID = id
		if v.AZ == "" {
			v.AZ = w.Region + "a"
		}
		if v.Type == "" {
			v.Type = "gp3"
		}
		if v.SizeGiB == 0 {
			v.SizeGiB = 8
		}
		if v.CreateTime.IsZero() {
			v.CreateTime = time.Now().UTC()
		}
		if v.State == "" {
			v.State = VolumeAvailable
			if len(v.Attachments) > 0 {
				v.State = VolumeInUse
			}
		}
	}
	for id, i := range w.Instances {
		i.ID = id
		w.instanceDefaults(i)
		if i.BlockDevices == nil {
			i.BlockDevices = map[string]string{}
		}
		if i.State != InstanceTerminated {
			w.attachBlockDevicesLocked(i)
		}
	}
}

// Path is the file the world is saved to ("" for in-memory).
func (w *World) Path() string { return w.path }

// Save writes the world atomically (temp file + rename). Every mutating
// method calls it; call it yourself only after editing fields by hand.
func (w *World) Save() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.saveLocked()
}

func (w *World) saveLocked() error {
	w.recordLocked()
	if w.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return fmt.Errorf("save world: %w", err)
	}
	// No fsync: we need readers to never see a torn file, not crash
	// durability, and saves happen on every API call.
	tmp, err := os.CreateTemp(filepath.Dir(w.path), "."+filepath.Base(w.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save world %s: %w", w.path, err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save world %s: %w", w.path, err)
	}
	if err := os.Rename(tmp.Name(), w.path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save world %s: %w", w.path, err)
	}
	return nil
}

// Update runs fn with the lock held and saves afterwards, also when fn
// fails part-way (it may have changed something). fn must not call World
// methods: they take the lock.
func (w *World) Update(fn func(w *World) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ferr := fn(w)
	return errors.Join(ferr, w.saveLocked())
}

// View runs fn with the lock held, for reading several fields
// consistently. fn must not keep references past its return.
func (w *World) View(fn func(w *World)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(w)
}

// AddVolume adds a volume. ID is required (see NewVolumeID); State defaults
// to available (in-use when it comes with attachments), Type to gp3, AZ to
// the region's "a" zone, SizeGiB to 8.
func (w *World) AddVolume(v Volume) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Set-up: the resource existed long before anyone describes it.
	w.backdate = true
	if err := checkNew(w.Volumes, v.ID, "vol", "volume"); err != nil {
		return err
	}
	if v.AZ == "" {
		v.AZ = w.Region + "a"
	}
	if v.Type == "" {
		v.Type = "gp3"
	}
	if v.SizeGiB == 0 {
		v.SizeGiB = 8
	}
	if v.CreateTime.IsZero() {
		v.CreateTime = time.Now().UTC()
	}
	for _, a := range v.Attachments {
		i, ok := w.Instances[a.InstanceID]
		if !ok {
			return fmt.Errorf("add volume %s: attached to unknown instance %s", v.ID, a.InstanceID)
		}
		if i.BlockDevices == nil {
			i.BlockDevices = map[string]string{}
		}
		i.BlockDevices[a.Device] = v.ID
	}
	if v.State == "" {
		v.State = VolumeAvailable
		if len(v.Attachments) > 0 {
			v.State = VolumeInUse
		}
	}
	c := v.clone()
	w.Volumes[v.ID] = &c
	return w.saveLocked()
}

// AddInstance adds an instance. ID is required (see NewInstanceID); State
// defaults to running (spotroot runs once EC2 says running), AZ to the
// region's "a" zone. Each BlockDevices entry gets an attached attachment:
// existing volumes must be available in the same zone; unknown volume ids
// become 8 GiB gp3 stubs deleted on termination, like an AMI's root.
// Credentials are generated when empty.
func (w *World) AddInstance(i Instance) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Set-up: the resource existed long before anyone describes it.
	w.backdate = true
	if err := checkNew(w.Instances, i.ID, "i", "instance"); err != nil {
		return err
	}
	w.instanceDefaults(&i)
	if !validZone(i.AZ, w.Region) {
		return fmt.Errorf("add instance %s: zone %s is not in region %s", i.ID, i.AZ, w.Region)
	}
	if _, ok := instanceStateCodes[i.State]; !ok {
		return fmt.Errorf("add instance %s: unknown state %q", i.ID, i.State)
	}
	// Validate every block device before changing anything.
	for dev, vid := range i.BlockDevices {
		v, ok := w.Volumes[vid]
		if !ok {
			if err := checkID(vid, "vol"); err != nil {
				return fmt.Errorf("add instance %s: device %s: %w", i.ID, dev, err)
			}
			continue
		}
		if v.AZ != i.AZ {
			return fmt.Errorf("add instance %s: volume %s is in %s, not %s", i.ID, vid, v.AZ, i.AZ)
		}
		if v.State != VolumeAvailable && !v.MultiAttach {
			return fmt.Errorf("add instance %s: volume %s is %s", i.ID, vid, v.State)
		}
	}
	c := i.clone()
	if c.BlockDevices == nil {
		c.BlockDevices = map[string]string{}
	}
	w.Instances[i.ID] = &c
	w.attachBlockDevicesLocked(&c)
	return w.saveLocked()
}

// attachBlockDevicesLocked gives every block device of i an attached
// attachment, creating stub volumes (deleted on termination) for unknown
// ids. Volumes already attached to i are left alone.
func (w *World) attachBlockDevicesLocked(i *Instance) {
	now := time.Now().UTC()
	for _, dev := range slices.Sorted(maps.Keys(i.BlockDevices)) {
		vid := i.BlockDevices[dev]
		v, ok := w.Volumes[vid]
		dot := false
		if !ok {
			v = &Volume{ID: vid, AZ: i.AZ, Type: "gp3", SizeGiB: 8, State: VolumeAvailable,
				CreateTime: i.LaunchTime}
			w.Volumes[vid] = v
			dot = true
		}
		if v.attachment(i.ID) >= 0 {
			continue
		}
		v.State = VolumeInUse
		v.Attachments = append(v.Attachments, Attachment{InstanceID: i.ID, Device: dev,
			State: AttachAttached, AttachTime: now, DeleteOnTermination: dot})
	}
}

// instanceDefaults fills what AddInstance defaults, also for instances
// written by hand into a world file.
func (w *World) instanceDefaults(i *Instance) {
	if i.AZ == "" {
		i.AZ = w.Region + "a"
	}
	if i.State == "" {
		i.State = InstanceRunning
	}
	if i.InstanceType == "" {
		i.InstanceType = "t3.micro"
	}
	if i.ImageID == "" {
		i.ImageID = "ami-" + derivedHex(i.ID, "ami", 17)
	}
	if i.PrivateIP == "" {
		i.PrivateIP = "169.254.2.15"
	}
	if i.Lifecycle == "" {
		i.Lifecycle = "spot"
	}
	if i.LaunchTime.IsZero() {
		i.LaunchTime = time.Now().UTC().Truncate(time.Second)
	}
	if i.Credentials.AccessKeyID == "" {
		i.Credentials = newCredentials("ASIA", true)
	}
	if i.InstanceStore == nil && w.Hostile != nil && w.Hostile.InstanceStore {
		i.InstanceStore = InstanceStoreNames(i.InstanceType, w.Hostile.InstanceStoreAt)
	}
}

// AddSnapshot adds a snapshot; ID is required, State defaults to completed.
func (w *World) AddSnapshot(s Snapshot) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	// Set-up: the resource existed long before anyone describes it.
	w.backdate = true
	if err := checkNew(w.Snapshots, s.ID, "snap", "snapshot"); err != nil {
		return err
	}
	if s.State == "" {
		s.State = "completed"
	}
	if s.Progress == "" && s.State == "completed" {
		s.Progress = "100%"
	}
	if s.StartTime.IsZero() {
		s.StartTime = time.Now().UTC()
	}
	c := s.clone()
	w.Snapshots[s.ID] = &c
	return w.saveLocked()
}

// AddImage adds an AMI; ID is required, State defaults to available,
// Architecture to x86_64 and RootDeviceName to /dev/xvda.
func (w *World) AddImage(m Image) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := checkNew(w.Images, m.ID, "ami", "image"); err != nil {
		return err
	}
	if m.State == "" {
		m.State = "available"
	}
	if m.Architecture == "" {
		m.Architecture = "x86_64"
	}
	if m.RootDeviceName == "" {
		m.RootDeviceName = "/dev/xvda"
	}
	if m.CreationDate.IsZero() {
		m.CreationDate = time.Now().UTC()
	}
	c := m.clone()
	w.Images[m.ID] = &c
	return w.saveLocked()
}

// SetInstanceState moves an instance to state; "terminated" does what
// TerminateInstance does. Attachments survive stop, as on EC2.
func (w *World) SetInstanceState(id, state string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, ok := w.Instances[id]
	if !ok {
		return fmt.Errorf("set state of instance %s: no such instance", id)
	}
	if _, ok := instanceStateCodes[state]; !ok {
		return fmt.Errorf("set state of instance %s: unknown state %q", id, state)
	}
	if state == InstanceTerminated {
		w.terminateLocked(i)
	} else {
		i.State = state
	}
	return w.saveLocked()
}

// TerminateInstance marks the instance terminated and removes all its
// attachments at once (the VM is gone, nothing to hot-unplug): volumes
// become available, root stubs AddInstance created are deleted.
func (w *World) TerminateInstance(id string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, ok := w.Instances[id]
	if !ok {
		return fmt.Errorf("terminate instance %s: no such instance", id)
	}
	w.terminateLocked(i)
	return w.saveLocked()
}

func (w *World) terminateLocked(i *Instance) {
	i.State = InstanceTerminated
	for vid, v := range w.Volumes {
		k := v.attachment(i.ID)
		if k < 0 {
			continue
		}
		dot := v.Attachments[k].DeleteOnTermination
		v.removeAttachment(i.ID)
		if dot && len(v.Attachments) == 0 {
			delete(w.Volumes, vid)
		}
	}
	clear(i.BlockDevices)
}

// Volume returns a copy of the volume.
func (w *World) Volume(id string) (Volume, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	v, ok := w.Volumes[id]
	if !ok {
		return Volume{}, false
	}
	return v.clone(), true
}

// Instance returns a copy of the instance.
func (w *World) Instance(id string) (Instance, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	i, ok := w.Instances[id]
	if !ok {
		return Instance{}, false
	}
	return i.clone(), true
}

// Snapshot returns a copy of the snapshot.
func (w *World) Snapshot(id string) (Snapshot, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.Snapshots[id]
	if !ok {
		return Snapshot{}, false
	}
	return s.clone(), true
}

// SetFault installs a fault for an EC2 action (or a Fault* pseudo action).
func (w *World) SetFault(action string, f Fault) error {
	return w.Update(func(w *World) error {
		w.Faults[action] = f
		return nil
	})
}

// ClearFault removes the fault for action.
func (w *World) ClearFault(action string) error {
	return w.Update(func(w *World) error {
		delete(w.Faults, action)
		return nil
	})
}

// OperatorCredentials returns the world's long-term operator key.
func (w *World) OperatorCredentials() Credentials {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Operator
}

// newCredentials makes a key pair: prefix ASIA with a session token for
// instance roles, AKIA without one for long-term keys, as AWS does.
func newCredentials(prefix string, session bool) Credentials {
	c := Credentials{
		AccessKeyID:     prefix + randUpper(16),
		SecretAccessKey: randBase64(30),
		Issued:          time.Now().UTC().Truncate(time.Second),
	}
	if session {
		c.Token = "IQoJb3JpZ2luX2VjE" + randBase64(240)
	}
	return c
}
