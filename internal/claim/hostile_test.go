package claim_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/spotroot/spotroot/e2e/sim"
	"github.com/spotroot/spotroot/internal/claim"
	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/imds"
)

// only leaves one hostile behaviour on (set up by tweak), so each test
// below proves that the boot path survives that behaviour, and that it
// fired, from the simulator's counters.
func (w *world) only(behaviour string, tweak func(h *sim.Hostile)) {
	w.t.Helper()
	err := w.sim.Update(func(sw *sim.World) error {
		for _, b := range sim.HostileBehaviours {
			if b != behaviour {
				if err := sw.Hostile.Disable(b, "this test isolates "+behaviour); err != nil {
					return err
				}
			}
		}
		tweak(sw.Hostile)
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) attachedTo(volID, instID string) {
	w.t.Helper()
	v := w.vol(volID)
	if len(v.Attachments) != 1 || v.Attachments[0].InstanceID != instID || v.Attachments[0].State != sim.AttachAttached {
		w.t.Fatalf("volume %s attachments = %+v, want only %s attached", volID, v.Attachments, instID)
	}
}

// A volume just created is NotFound and a fresh attachment missing while
// EC2's view lags: the claim waits within its grace instead of failing.
func TestClaimSurvivesLaggingViews(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	w.only(sim.HostileConsistency, func(h *sim.Hostile) {
		h.ConsistencyLag, h.ConsistencyOldest = time.Second, true
	})
	c := w.claimer("us-east-1a", nil)
	v := config.Volume{Tag: map[string]string{"Name": "fresh"}, Mount: "/", Create: &config.Create{SizeGiB: 1, From: "empty"}}
	cl, err := claimAndWait(context.Background(), c, v)
	if err != nil {
		t.Fatal(err)
	}
	w.attachedTo(cl.VolumeID, c.Instance.ID)
	if st := w.sim.Stats(); st.StaleReads == 0 {
		t.Fatal("no Describe was answered from a stale view: the test proves nothing")
	}
}

// Every mutating answer is lost after EC2 committed it; the SDK's retry of
// AttachVolume then gets VolumeInUse. The volume attached to us is a
// success, not "in use".
func TestClaimSurvivesLostAttachAnswers(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	for _, pool := range []bool{false, true} {
		name := map[bool]string{false: "tag", true: "pool"}[pool]
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			// Every AttachVolume answer is lost (every CreateTags too would
			// only make the SDK retry the tag until the call times out).
			w.only(sim.HostileLost, func(h *sim.Hostile) {
				h.LostResponses, h.LostStall, h.LostOnly = 1, 100*time.Millisecond, []string{"AttachVolume"}
			})
			tags := map[string]string{"Name": "home-root"}
			v := home
			if pool {
				tags = map[string]string{"spotroot:pool": "p"}
				v = config.Volume{Pool: tags, Mount: "/"}
				w.volume("us-east-1a", tags)
			}
			id := w.volume("us-east-1a", tags)
			c := w.claimer("us-east-1a", nil)
			cl, err := claimAndWait(context.Background(), c, v)
			if err != nil {
				t.Fatal(err)
			}
			if !pool && cl.VolumeID != id {
				t.Fatalf("claimed %s, want %s", cl.VolumeID, id)
			}
			w.attachedTo(cl.VolumeID, c.Instance.ID)
			held := 0
			w.sim.View(func(sw *sim.World) {
				for _, vol := range sw.Volumes {
					for _, a := range vol.Attachments {
						if a.InstanceID == c.Instance.ID && a.Device != "/dev/xvda" {
							held++
						}
					}
				}
			})
			if held != 1 {
				t.Fatalf("instance holds %d volumes, want 1", held)
			}
			if st := w.sim.Stats(); st.Lost["AttachVolume"] == 0 {
				t.Fatalf("no AttachVolume answer was lost: %+v", st.Lost)
			}
		})
	}
}

// The first free names are refused as "already in use": one is an
// instance-store disk DescribeInstances does not list, one still reserved
// after a detach. The claim moves on to the next free name.
func TestClaimSkipsDeviceNamesInUse(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	w.only(sim.HostileInstance, func(h *sim.Hostile) {
		h.InstanceStore, h.InstanceStoreAt, h.DeviceHold = true, "/dev/sdf", time.Minute
	})
	id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
	c := w.claimer("us-east-1a", func(i *sim.Instance) {
		i.InstanceType = "m5d.large"
		i.HeldDevices = map[string]time.Time{"/dev/sdg": time.Now().Add(time.Minute)}
	})
	cl, err := claimAndWait(context.Background(), c, home)
	if err != nil {
		t.Fatal(err)
	}
	if cl.VolumeID != id || cl.Device != "/dev/sdh" {
		t.Fatalf("claim = %s on %s, want %s on /dev/sdh (sdf: instance store, sdg: held)", cl.VolumeID, cl.Device, id)
	}
	w.attachedTo(id, c.Instance.ID)
	if st := w.sim.Stats(); st.DeviceInUse < 2 {
		t.Fatalf("%d 'already in use' answers, want 2", st.DeviceInUse)
	}
}

// PID 1 runs while EC2 still says pending: AttachVolume's IncorrectState
// is retried, never reported as "in use".
func TestClaimWaitsOutPending(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	w.only(sim.HostilePending, func(h *sim.Hostile) { h.PendingFor = time.Second })
	id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
	c := w.claimer("us-east-1a", nil)
	cl, err := claimAndWait(context.Background(), c, home)
	if err != nil {
		t.Fatal(err)
	}
	w.attachedTo(id, c.Instance.ID)
	if cl.VolumeID != id {
		t.Fatalf("claimed %s", cl.VolumeID)
	}
	if st := w.sim.Stats(); st.Pending == 0 {
		t.Fatal("AttachVolume never saw the instance pending")
	}
}

// A pool claimant that is still pending asks DescribeInstances and waits
// instead of spending AttachVolume's scarce tokens on IncorrectState: at
// fleet scale each such answer is a claim the bucket cannot serve. The
// simulator's counters show the one AttachVolume it sent.
func TestPoolClaimWaitsForRunningBeforeAttaching(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	w.only(sim.HostilePending, func(h *sim.Hostile) { h.PendingFor = 3 * time.Second })
	pool := map[string]string{"spotroot:pool": "p"}
	w.volume("us-east-1a", pool)
	w.volume("us-east-1a", pool)
	c := w.claimer("us-east-1a", nil)
	cl, err := claimAndWait(context.Background(), c, config.Volume{Pool: pool, Mount: "/"})
	if err != nil {
		t.Fatal(err)
	}
	w.attachedTo(cl.VolumeID, c.Instance.ID)
	st := w.sim.Stats()
	if st.Pending != 0 || st.Calls["AttachVolume"] != 1 {
		t.Fatalf("AttachVolume sent %d times, %d IncorrectState answers for a pending instance; want 1 and 0", st.Calls["AttachVolume"], st.Pending)
	}
	if st.Calls["DescribeInstances"] == 0 {
		t.Fatal("the claimant never asked EC2 whether it was running")
	}
}

// Instance-profile credentials are 404 for the first second, then rotate
// every 300ms and expire after 1.5s: a claim at boot and another after the
// first keys expired both work.
func TestClaimSurvivesLateAndRotatingCredentials(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	w.only(sim.HostileCredentials, func(h *sim.Hostile) {
		h.CredentialDelay, h.CredentialRotate, h.CredentialLifetime = time.Second, 300*time.Millisecond, 1500*time.Millisecond
	})
	id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
	c := w.claimer("us-east-1a", nil)
	inst, _ := w.sim.Instance(c.Instance.ID)
	first := inst.Credentials.AccessKeyID
	if _, err := claimAndWait(context.Background(), c, home); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the first keys expire
	cl, err := claimAndWait(context.Background(), c, home)
	if err != nil || !cl.AlreadyAttached || cl.VolumeID != id {
		t.Fatalf("claim after rotation = %+v, %v", cl, err)
	}
	inst, _ = w.sim.Instance(c.Instance.ID)
	if st := w.sim.Stats(); st.Credential4x == 0 || inst.Credentials.AccessKeyID == first {
		t.Fatalf("credential 404s %d, keys rotated %v: the test proves nothing", st.Credential4x, inst.Credentials.AccessKeyID != first)
	}
}

// A guest clock seven minutes off either way. With the metadata service's
// Date header (PID 1's client) the first request is already signed with
// EC2's clock: nothing is refused. Without it (an IMDS answer without Date)
// EC2 refuses the first request (RequestExpired behind,
// SignatureDoesNotMatch ahead) and the SDK corrects from EC2's Date header.
func TestClaimCorrectsClockSkew(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	for _, skew := range []time.Duration{7 * time.Minute, -7 * time.Minute} {
		for _, imdsDate := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v/imds-date=%v", skew, imdsDate), func(t *testing.T) {
				w := newWorld(t)
				w.only(sim.HostileClock, func(h *sim.Hostile) { h.ClockSkew = skew })
				id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
				c := w.claimer("us-east-1a", nil)
				if !imdsDate {
					md := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
						w.srv.IMDSHandler(c.Instance.ID).ServeHTTP(dateless{rw}, r)
					}))
					t.Cleanup(md.Close)
					ic := imds.New(md.URL, nil)
					c.EC2 = claim.NewClient(claim.ClientOptions{Region: "us-east-1", Endpoint: w.ec2.URL, IMDS: ic.SDK(), ClockOffset: ic.ClockOffset})
				}
				if _, err := claimAndWait(context.Background(), c, home); err != nil {
					t.Fatal(err)
				}
				w.attachedTo(id, c.Instance.ID)
				switch st := w.sim.Stats(); {
				case imdsDate && st.Skewed != 0:
					t.Fatalf("%d requests refused for skew though IMDS's Date told the clock", st.Skewed)
				case !imdsDate && st.Skewed == 0:
					t.Fatal("no request was refused for skew: the test proves nothing")
				}
			})
		}
	}
}

// dateless drops the Date header, as an IMDS that sent none.
type dateless struct{ http.ResponseWriter }

func (d dateless) WriteHeader(code int) {
	d.Header()["Date"] = nil // nil, not deleted: net/http then adds none
	d.ResponseWriter.WriteHeader(code)
}

func (d dateless) Write(b []byte) (int, error) {
	if d.Header()["Date"] != nil {
		d.Header()["Date"] = nil
	}
	return d.ResponseWriter.Write(b)
}

// Without the fix the claim would call a pending instance's volume "in
// use"; make sure the message for a real owner still says so.
func TestInUseStillRefusedUnderHostileProfile(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	id := w.volume("us-east-1a", map[string]string{"Name": "home-root"})
	owner := w.claimer("us-east-1a", nil)
	if _, err := claimAndWait(context.Background(), owner, home); err != nil {
		t.Fatal(err)
	}
	_, err := w.claimer("us-east-1a", nil).Claim(context.Background(), home)
	if err == nil || !strings.Contains(err.Error(), "spotroot never takes a volume from a running instance") {
		t.Fatalf("err = %v", err)
	}
	w.attachedTo(id, owner.Instance.ID)
}

// The reason claim.RetryableCodes exists: the SDK alone (its standard
// retryer, whose clock-skew correction retries SignatureDoesNotMatch and
// AuthFailure) does not retry EC2's RequestExpired, so a guest clock seven
// minutes behind fails every call without it.
func TestSDKAloneDoesNotRetryRequestExpired(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	w.only(sim.HostileClock, func(h *sim.Hostile) { h.ClockSkew = 7 * time.Minute })
	op := w.sim.OperatorCredentials()
	plain := ec2.NewFromConfig(aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(w.ec2.URL),
		Credentials: credentials.NewStaticCredentialsProvider(op.AccessKeyID, op.SecretAccessKey, "")})
	_, err := plain.DescribeVolumes(context.Background(), &ec2.DescribeVolumesInput{})
	if claim.ErrorCode(err) != "RequestExpired" {
		t.Fatalf("plain SDK client: err = %v, want RequestExpired (has the SDK learnt to retry it? then RetryableCodes can go)", err)
	}
}

// A boot whose budget runs out right after it made the move's snapshot
// names that snapshot in its one line, though EC2's views do not show it
// yet: "no snapshot yet" would tell the operator the move never started.
func TestMoveProgressNamesUnseenSnapshot(t *testing.T) {
	t.Parallel() // each test has its own world; they mostly wait on the hostile clock
	w := newWorld(t)
	w.only(sim.HostileConsistency, func(h *sim.Hostile) {
		h.ConsistencyLag, h.ConsistencyOldest = 2*time.Second, true
	})
	w.sim.Update(func(sw *sim.World) error { sw.CreateLatency = 30 * time.Second; return nil })
	old := w.volume("us-east-1b", map[string]string{"Name": "home-root"})
	c := w.claimer("us-east-1a", nil)
	// The snapshot is made after the grace (2.5 s); the budget ends 1.5 s
	// later, when every view is still 2 s old.
	c.ConsistencyGrace, c.MoveBudget = 2500*time.Millisecond, 4*time.Second
	_, err := c.Claim(context.Background(), home)
	var snaps []string
	w.sim.View(func(sw *sim.World) {
		for id := range sw.Snapshots {
			snaps = append(snaps, id)
		}
	})
	if len(snaps) != 1 {
		t.Fatalf("%d snapshots, want 1 (err %v)", len(snaps), err)
	}
	var mip *claim.MoveInProgressError
	if !errorsAs(err, &mip) || mip.Snapshot != snaps[0] || !strings.Contains(err.Error(), "move of volume "+old+" from us-east-1b to us-east-1a is under way (snapshot "+snaps[0]+")") {
		t.Fatalf("err = %v, want the move under way with snapshot %s", err, snaps[0])
	}
	if st := w.sim.Stats(); st.StaleReads == 0 {
		t.Fatal("no Describe was answered from a stale view: the test proves nothing")
	}
}
