package sim

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Hostile is EC2 on a bad day: every behaviour of the real service that a
// kinder simulator would hide. It is on by default (Load fills in
// DefaultHostile), so every test and scenario runs against it unless it
// turns a behaviour off with Disable, which wants a written reason.
//
// Randomness comes from Seed alone (SeedFromEnv picks it): SPOTROOT_SEED=N
// replays a run's decisions. Concurrent callers can still interleave
// differently, so a replay repeats the dice, not the thread schedule.
type Hostile struct {
	Seed uint64

	// ConsistencyLag: Describe* answer from a view of the world up to this
	// old (uniform per call), so a new volume, snapshot or instance may be
	// NotFound, a fresh attachment missing, a terminated owner still
	// attached. AWS documents no bound, only that results "might not be
	// immediately visible" and that callers should poll with backoff:
	// "Eventual consistency in the Amazon EC2 API",
	// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
	// (and kubernetes/kubernetes#31891, hashicorp/packer's
	// InvalidVolume.NotFound retries). Two seconds is a bad day for
	// DescribeVolumes without making every test slow.
	ConsistencyLag time.Duration `json:",omitempty"`
	// ConsistencyOldest makes every Describe answer from the oldest view
	// (ConsistencyLag ago) instead of a random age: deterministic tests.
	ConsistencyOldest bool `json:",omitempty"`

	// LostResponses is the fraction of successful mutating calls whose
	// answer is lost after EC2 committed them: a 500 InternalError, a reset
	// connection, or a stall of LostStall then a reset (a client timeout).
	// EC2's common errors list InternalError/ServiceUnavailable as
	// retryable server errors
	// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html),
	// and the SDK retries them, so a non-idempotent AttachVolume is sent
	// twice.
	LostResponses float64       `json:",omitempty"`
	LostStall     time.Duration `json:",omitempty"`
	// LostOnly limits lost answers to these actions (empty: all mutating).
	LostOnly []string `json:",omitempty"`

	// Throttle applies EC2's per-API token buckets (throttleBuckets), with
	// RequestLimitExceeded when a bucket is empty.
	Throttle bool `json:",omitempty"`

	// CredentialDelay: iam/security-credentials/<role> answers 404 until
	// this long after the instance first asks (the first ask stands in for
	// "launch": a TCG guest boots ten times slower than a Nitro one, so a
	// window measured from launch would be over before PID 1 asks).
	// CredentialLifetime is the Expiration IMDS advertises; CredentialRotate
	// how often new keys appear. AWS: "We make new credentials available at
	// least five minutes before the expiration of the old credentials"
	// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-metadata-security-credentials.html);
	// the defaults scale 6 h / 5 min down so rotation happens during a test.
	CredentialDelay    time.Duration `json:",omitempty"`
	CredentialLifetime time.Duration `json:",omitempty"`
	CredentialRotate   time.Duration `json:",omitempty"`

	// DeviceHold keeps a device name reserved on the instance after its
	// volume detached: AttachVolume on it answers "Attachment point … is
	// already in use" (kubernetes/kubernetes#31891: EC2 support confirmed
	// detached names conflicting later; aws-ebs-csi-driver#1674).
	DeviceHold time.Duration `json:",omitempty"`

	// InstanceStore gives instance types with local NVMe disks their
	// instance-store devices (instanceStoreDisks): mapped device names that
	// DescribeInstances never lists (its InstanceBlockDeviceMapping has
	// only an Ebs member, EC2 API reference) but AttachVolume refuses.
	// InstanceStoreAt is the first name they take (an AMI or launch
	// template maps ephemeral0 there; "NVMe instance store volumes are
	// automatically enumerated and assigned a device name", API reference,
	// BlockDeviceMapping).
	InstanceStore   bool   `json:",omitempty"`
	InstanceStoreAt string `json:",omitempty"`

	// PendingFor keeps an instance "pending" this long after its first EC2
	// call: PID 1 runs before EC2 reports running, and AttachVolume then
	// answers IncorrectState "Instance '…' is not 'running'" (AttachVolume
	// API reference, errors: IncorrectState).
	PendingFor time.Duration `json:",omitempty"`

	// ClockSkew is EC2's clock minus the guests'. SigV4 requests more than
	// five minutes off are refused: behind with RequestExpired ("Request has
	// expired", EC2 common errors), ahead with SignatureDoesNotMatch
	// "Signature not yet current" (the wording clients report, e.g.
	// convox/rack#235, aws/aws-sdk-js#2565). The Date header carries EC2's
	// time, which is what the SDK corrects skew from.
	ClockSkew time.Duration `json:",omitempty"`

	// Off records, per behaviour, why a test turned it off.
	Off map[string]string `json:",omitempty"`
}

// Behaviour names for Disable.
const (
	HostileConsistency  = "consistency"
	HostileLost         = "lost-responses"
	HostileThrottle     = "throttling"
	HostileCredentials  = "credentials"
	HostileDeviceHold   = "device-hold"
	HostileInstance     = "instance-store"
	HostilePending      = "pending"
	HostileClock        = "clock"
	maxSkewBeforeRefuse = 5 * time.Minute
)

// HostileBehaviours lists every behaviour Disable knows.
var HostileBehaviours = []string{HostileConsistency, HostileLost, HostileThrottle, HostileCredentials,
	HostileDeviceHold, HostileInstance, HostilePending, HostileClock}

// DefaultHostile is the profile every world starts with.
func DefaultHostile(seed uint64) *Hostile {
	h := &Hostile{
		Seed:               seed,
		ConsistencyLag:     2 * time.Second,
		LostResponses:      0.1,
		LostStall:          2 * time.Second,
		Throttle:           true,
		CredentialDelay:    3 * time.Second,
		CredentialLifetime: 60 * time.Second,
		CredentialRotate:   30 * time.Second,
		DeviceHold:         60 * time.Second,
		InstanceStore:      true,
		InstanceStoreAt:    "/dev/sdb",
		PendingFor:         3 * time.Second,
	}
	// The seed also picks the guest's clock and where instance storage
	// sits, so a seed sweep covers both sides.
	switch seed % 3 {
	case 1:
		h.ClockSkew = 7 * time.Minute
	case 2:
		h.ClockSkew = -7 * time.Minute
	}
	if seed%2 == 1 {
		h.InstanceStoreAt = "/dev/sdf" // where the claim's first choice would be
	}
	return h
}

// SeedFromEnv returns SPOTROOT_SEED, or a fresh random seed.
func SeedFromEnv() uint64 {
	if s := os.Getenv("SPOTROOT_SEED"); s != "" {
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return n
		}
	}
	var b [8]byte
	crand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) % 1_000_000_000
}

// Disable turns one behaviour off (or all with "*"); reason is required,
// so every test that makes the cloud kinder says why.
func (h *Hostile) Disable(behaviour, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("disable hostile %s: a reason is required", behaviour)
	}
	if behaviour == "*" {
		for _, b := range HostileBehaviours {
			h.Disable(b, reason)
		}
		return nil
	}
	switch behaviour {
	case HostileConsistency:
		h.ConsistencyLag = 0
	case HostileLost:
		h.LostResponses = 0
	case HostileThrottle:
		h.Throttle = false
	case HostileCredentials:
		h.CredentialDelay, h.CredentialLifetime, h.CredentialRotate = 0, 0, 0
	case HostileDeviceHold:
		h.DeviceHold = 0
	case HostileInstance:
		h.InstanceStore = false
	case HostilePending:
		h.PendingFor = 0
	case HostileClock:
		h.ClockSkew = 0
	default:
		return fmt.Errorf("disable hostile %s: unknown behaviour (known: %s)", behaviour, strings.Join(HostileBehaviours, ", "))
	}
	if h.Off == nil {
		h.Off = map[string]string{}
	}
	h.Off[behaviour] = reason
	return nil
}

// DisableHostile turns a behaviour of w's profile off, with the reason.
func (w *World) DisableHostile(behaviour, reason string) error {
	return w.Update(func(w *World) error { return w.Hostile.Disable(behaviour, reason) })
}

// HostileSeed returns the seed of w's profile.
func (w *World) HostileSeed() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Hostile.Seed
}

// rngLocked returns the world's seeded random source.
func (w *World) rngLocked() *rand.Rand {
	if w.rng == nil {
		w.rng = rand.New(rand.NewPCG(w.Hostile.Seed, 0x5107_2007))
	}
	return w.rng
}

// ec2Now is EC2's clock: the guests' plus ClockSkew.
func (w *World) ec2NowLocked() time.Time { return time.Now().Add(w.Hostile.ClockSkew) }

// HostileStats counts what the hostile profile did, for tests and the
// soak to prove a behaviour fired.
type HostileStats struct {
	Calls        map[string]int // EC2 calls answered, by action (throttled ones included)
	Throttled    map[string]int
	Lost         map[string]int // answers dropped after commit, by action
	StaleReads   int            // Describe* answered from an older view than the truth
	Credential4x int            // credential 404s served
	Pending      int            // IncorrectState answers for a pending instance
	DeviceInUse  int            // "already in use" answers
	Skewed       int            // requests refused for clock skew
}

// Stats returns a copy of the counters.
func (w *World) Stats() HostileStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Calls, s.Throttled, s.Lost = cloneCounts(w.stats.Calls), cloneCounts(w.stats.Throttled), cloneCounts(w.stats.Lost)
	return s
}

func cloneCounts(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func count(m *map[string]int, k string) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[k]++
}

// --- hooks called by serveEC2 -------------------------------------------------

// hostileBefore runs after authentication, before the action: EC2's clock
// check, pending instances, and throttling. It answers and returns false
// when the call must not proceed. The Date header always carries EC2's
// clock.
func (s *Server) hostileBefore(rw http.ResponseWriter, r *http.Request, c *call) *APIError {
	w := s.World
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.ec2NowLocked()
	rw.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	count(&w.stats.Calls, c.action)
	if e := checkSkew(r, now); e != nil {
		w.stats.Skewed++
		return e
	}
	if w.promotePendingLocked(time.Now()) {
		s.saveLocked()
	}
	if c.caller.instanceID != "" && w.Hostile.PendingFor > 0 {
		if i := w.Instances[c.caller.instanceID]; i != nil && i.PendingUntil == nil && i.State == InstanceRunning {
			t := time.Now().Add(w.Hostile.PendingFor)
			i.PendingUntil = &t
			i.State = InstancePending
			s.saveLocked()
			w.backdatePendingLocked(i.ID)
		}
	}
	if w.Hostile.Throttle && !c.dryRun() {
		if !w.takeTokenLocked(c, time.Now()) {
			count(&w.stats.Throttled, c.action)
			return newError("RequestLimitExceeded", "Request limit exceeded.")
		}
	}
	return nil
}

// checkSkew refuses a SigV4 request whose X-Amz-Date is more than five
// minutes away from EC2's clock, the way EC2 words it.
func checkSkew(r *http.Request, now time.Time) *APIError {
	t, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return nil // the signature check reports it
	}
	const f = "20060102T150405Z"
	switch d := now.Sub(t); {
	case d > maxSkewBeforeRefuse:
		return newError("RequestExpired", fmt.Sprintf("Request has expired. Timestamp date is %s, EC2's clock says %s.", t.Format(f), now.UTC().Format(f)))
	case d < -maxSkewBeforeRefuse:
		return newError("SignatureDoesNotMatch", fmt.Sprintf("Signature not yet current: %s is still later than %s (%s + 5 min.)",
			t.Format(f), now.UTC().Add(maxSkewBeforeRefuse).Format(f), now.UTC().Format(f)))
	}
	return nil
}

// promotePendingLocked moves instances whose pending time is over to
// running; true when it changed any.
func (w *World) promotePendingLocked(now time.Time) bool {
	changed := false
	for _, i := range w.Instances {
		if i.State == InstancePending && i.PendingUntil != nil && !now.Before(*i.PendingUntil) {
			i.State = InstanceRunning
			changed = true
		}
	}
	return changed
}

// hostileLose decides, after a mutating action committed, whether its
// answer is lost; if so it loses it and returns true.
func (s *Server) hostileLose(rw http.ResponseWriter, r *http.Request, c *call) bool {
	w := s.World
	w.mu.Lock()
	p, stall := w.Hostile.LostResponses, w.Hostile.LostStall
	only := w.Hostile.LostOnly
	lose := p > 0 && (len(only) == 0 || slices.Contains(only, c.action)) && w.rngLocked().Float64() < p
	kind := 0
	if lose {
		kind = w.rngLocked().IntN(3)
		count(&w.stats.Lost, c.action)
	}
	w.mu.Unlock()
	if !lose {
		return false
	}
	s.log().Info("ec2: hostile: answer lost after commit", "action", c.action, "request", c.requestID, "how", []string{"500", "reset", "timeout"}[kind])
	switch kind {
	case 0:
		writeError(rw, c.requestID, newErrorStatus("InternalError", "An internal error has occurred.", http.StatusInternalServerError))
		return true
	case 2:
		sleepCtx(r.Context(), stall)
	}
	// Abort the response: HTTP/1 closes the connection, HTTP/2 resets
	// the stream; the client sees no answer at all.
	panic(http.ErrAbortHandler)
}

func newErrorStatus(code, msg string, status int) *APIError {
	e := newError(code, msg)
	e.Status = status
	return e
}

// --- token buckets --------------------------------------------------------

// bucketSpec is one row of EC2's throttling table: "Request throttling for
// the Amazon EC2 API", https://docs.aws.amazon.com/AWSEC2/latest/APIReference/throttling.html,
// "Request token bucket sizes and refill rates". Each API has its own
// bucket of its category's size ("each API is evaluated individually").
type bucketSpec struct {
	size, refill float64
}

var (
	bucketNonMutating = bucketSpec{100, 20} // Describe*, List*, Get*
	bucketUnfiltered  = bucketSpec{50, 10}  // DescribeInstances/Volumes/Snapshots/SpotInstanceRequests without filter or pagination
	bucketMutating    = bucketSpec{50, 5}   // every other mutating action
	bucketIntensive   = bucketSpec{50, 5}   // resource-intensive, e.g. RequestSpotInstances
	// Uncategorized actions with their own sizes (same table).
	bucketUncategorized = map[string]bucketSpec{
		"CreateTags":     {100, 10},
		"DeleteTags":     {100, 10},
		"CreateVolume":   {100, 5},
		"DeleteVolume":   {100, 5},
		"CreateSnapshot": {100, 5},
		"DeleteSnapshot": {100, 5},
		"RunInstances":   {5, 2},
	}
	unfilteredActions = []string{"DescribeInstances", "DescribeInstanceStatus", "DescribeNetworkInterfaces",
		"DescribeSecurityGroups", "DescribeSnapshots", "DescribeSpotInstanceRequests", "DescribeVolumes"}
)

// bucketFor names the bucket a call draws from, and its spec.
func bucketFor(c *call) (string, bucketSpec) {
	a := c.action
	if spec, ok := bucketUncategorized[a]; ok {
		return a, spec
	}
	switch {
	case a == "RequestSpotInstances":
		return a, bucketIntensive
	case strings.HasPrefix(a, "Describe") || strings.HasPrefix(a, "Get") || strings.HasPrefix(a, "List"):
		if slices.Contains(unfilteredActions, a) && !c.filteredOrPaginated() {
			return a + "/unfiltered", bucketUnfiltered
		}
		return a, bucketNonMutating
	}
	return a, bucketMutating
}

// filteredOrPaginated: the call names a Filter or MaxResults/NextToken.
// Ids are neither: AWS recommends filters and pagination to draw from the
// larger bucket.
func (c *call) filteredOrPaginated() bool {
	for k := range c.params {
		if strings.HasPrefix(k, "Filter.") || k == "MaxResults" || k == "NextToken" {
			return true
		}
	}
	return false
}

type bucket struct {
	tokens float64
	at     time.Time
}

func (w *World) takeTokenLocked(c *call, now time.Time) bool {
	name, spec := bucketFor(c)
	if w.buckets == nil {
		w.buckets = map[string]*bucket{}
	}
	b := w.buckets[name]
	if b == nil {
		b = &bucket{tokens: spec.size, at: now}
		w.buckets[name] = b
	}
	b.tokens = min(spec.size, b.tokens+now.Sub(b.at).Seconds()*spec.refill)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// --- instance store -------------------------------------------------------

// instanceStoreDisks is how many local NVMe disks an instance type has
// (EC2 User Guide, "Instance store volume limits for EC2 instances").
var instanceStoreDisks = map[string]int{
	"c5d.large": 1, "c5d.xlarge": 1, "c5d.2xlarge": 1, "c6gd.medium": 1, "c6gd.large": 1,
	"m5d.large": 1, "m5d.xlarge": 1, "m5d.2xlarge": 1, "m6id.large": 1, "m6gd.large": 1,
	"r5d.large": 1, "r6id.large": 1, "i3.large": 1, "i4i.large": 1, "i3en.large": 1,
	"m5d.4xlarge": 2, "c5d.4xlarge": 1, "i3.4xlarge": 2, "i3en.6xlarge": 2,
}

// InstanceStoreNames returns the device names an instance type's local disks
// occupy when the first is mapped at first (ephemeral0, 1, …).
func InstanceStoreNames(instanceType, first string) []string {
	n := instanceStoreDisks[instanceType]
	if n == 0 || first == "" {
		return nil
	}
	base, l := first[:len(first)-1], first[len(first)-1]
	var out []string
	for k := range n {
		out = append(out, base+string(rune(l)+rune(k)))
	}
	return out
}

// deviceTakenLocked reports why AttachVolume must refuse dev on i: an
// instance-store disk or a name still reserved after a detach.
func (w *World) deviceTakenLocked(i *Instance, dev string, now time.Time) bool {
	l := deviceLetter(dev)
	for _, d := range i.InstanceStore {
		if deviceLetter(d) == l {
			return true
		}
	}
	for d, until := range i.HeldDevices {
		if deviceLetter(d) == l && now.Before(until) {
			return true
		}
	}
	// xvdX and sdX are the same attachment point (aws-ebs-csi-driver#1674).
	for d := range i.BlockDevices {
		if deviceLetter(d) == l {
			return true
		}
	}
	return false
}

// deviceLetter maps /dev/sdf, /dev/xvdf and sdf to "f" (xvdba to "ba").
func deviceLetter(dev string) string {
	dev = strings.TrimPrefix(dev, "/dev/")
	for _, p := range []string{"xvd", "sd"} {
		if rest, ok := strings.CutPrefix(dev, p); ok && rest != "" {
			return strings.TrimRight(rest, "0123456789")
		}
	}
	return dev
}

// holdDeviceLocked reserves dev on instID for DeviceHold after a detach.
func (w *World) holdDeviceLocked(instID, dev string) {
	if w.Hostile.DeviceHold <= 0 {
		return
	}
	i := w.Instances[instID]
	if i == nil || i.State == InstanceTerminated {
		return
	}
	if i.HeldDevices == nil {
		i.HeldDevices = map[string]time.Time{}
	}
	i.HeldDevices[dev] = time.Now().Add(w.Hostile.DeviceHold)
}

// --- credentials ----------------------------------------------------------

// rotateCredentialsLocked gives i new keys once its current ones are
// CredentialRotate old; the old ones keep working until they expire.
func (w *World) rotateCredentialsLocked(i *Instance, now time.Time) {
	h := w.Hostile
	if h.CredentialRotate <= 0 || h.CredentialLifetime <= 0 || i.Credentials.AccessKeyID == "" {
		return
	}
	if i.Credentials.Expires.IsZero() {
		i.Credentials.Expires = i.Credentials.Issued.Add(h.CredentialLifetime)
	}
	if now.Sub(i.Credentials.Issued) < h.CredentialRotate {
		return
	}
	old := i.Credentials
	i.OldCredentials = slices.DeleteFunc(append(i.OldCredentials, old), func(c Credentials) bool { return now.After(c.Expires) })
	i.Credentials = newCredentials("ASIA", true)
	i.Credentials.Issued = now.UTC()
	i.Credentials.Expires = now.Add(h.CredentialLifetime).UTC()
}

// credentialsHiddenLocked: IMDS answers 404 for the role's credentials
// until CredentialDelay after the first ask.
func (w *World) credentialsHiddenLocked(i *Instance, now time.Time) bool {
	d := w.Hostile.CredentialDelay
	if d <= 0 {
		return false
	}
	if i.CredentialsAsked == nil {
		t := now
		i.CredentialsAsked = &t
	}
	if now.Sub(*i.CredentialsAsked) < d {
		w.stats.Credential4x++
		return true
	}
	return false
}
