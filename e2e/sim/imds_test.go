package sim

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// do sends a raw IMDS request and returns status, body and the TTL header.
func (e *env) do(method, path string, hdr map[string]string) (int, string, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.imdsURL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds")
}

func (e *env) token(ttl string) string {
	e.t.Helper()
	st, tok, _ := e.do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": ttl})
	if st != 200 {
		e.t.Fatalf("token PUT: status %d", st)
	}
	return tok
}

func TestIMDSWithSDKClient(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.imdsClient()

	get := func(path string) string {
		t.Helper()
		out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			t.Fatalf("GetMetadata %s: %v", path, err)
		}
		defer out.Content.Close()
		b, _ := io.ReadAll(out.Content)
		return string(b)
	}
	for path, want := range map[string]string{
		"instance-id":                 e.inst.ID,
		"instance-type":               "m7i.large",
		"ami-id":                      e.inst.ImageID,
		"placement/availability-zone": "us-east-1a",
		"placement/region":            "us-east-1",
		"local-ipv4":                  "169.254.2.15",
		"hostname":                    "ip-169-254-2-15.ec2.internal",
		"iam/security-credentials/":   "spotroot-test",
		"instance-life-cycle":         "spot",
	} {
		if got := get(path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}

	region, err := c.GetRegion(ctx, nil)
	if err != nil || region.Region != "us-east-1" {
		t.Fatalf("GetRegion = %+v, %v", region, err)
	}
	doc, err := c.GetInstanceIdentityDocument(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := doc.InstanceIdentityDocument
	if d.InstanceID != e.inst.ID || d.Region != "us-east-1" || d.AvailabilityZone != "us-east-1a" ||
		d.Version != "2017-09-30" || d.AccountID != "123456789012" || d.ImageID != e.inst.ImageID ||
		d.InstanceType != "m7i.large" || d.Architecture != "x86_64" || d.PrivateIP != "169.254.2.15" ||
		!d.PendingTime.Equal(e.inst.LaunchTime) {
		t.Errorf("identity document = %+v", d)
	}
	ud, err := c.GetUserData(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(ud.Content)
	if string(b) != string(e.inst.UserData) {
		t.Errorf("user-data = %q", b)
	}
	info, err := c.GetIAMInfo(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.InstanceProfileArn != "arn:aws:iam::123456789012:instance-profile/spotroot-test" || info.Code != "Success" {
		t.Errorf("iam info = %+v", info.IAMInfo)
	}

	// The role credentials are the instance's key pair.
	creds, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = c }).Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if creds.AccessKeyID != e.inst.Credentials.AccessKeyID || creds.SecretAccessKey != e.inst.Credentials.SecretAccessKey ||
		creds.SessionToken != e.inst.Credentials.Token || !strings.HasPrefix(creds.AccessKeyID, "ASIA") {
		t.Errorf("role creds = %+v, want %+v", creds, e.inst.Credentials)
	}
	// The SDK caps role credentials at an hour; ours say six.
	if !creds.CanExpire || creds.Expires.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("role creds expiry = %v (can expire %v)", creds.Expires, creds.CanExpire)
	}
}

func TestIMDSTokenRules(t *testing.T) {
	e := newEnv(t)
	hdr := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const ttlH = "X-aws-ec2-metadata-token-ttl-seconds"

	if st, _, _ := e.do("GET", "/latest/meta-data/instance-id", nil); st != 401 {
		t.Errorf("GET without token: %d, want 401", st)
	}
	if st, _, _ := e.do("GET", "/latest/meta-data/instance-id", hdr("X-aws-ec2-metadata-token", "bogus")); st != 401 {
		t.Errorf("GET with bogus token: %d, want 401", st)
	}
	for _, ttl := range []string{"", "0", "21601", "abc", "-5"} {
		if st, _, _ := e.do("PUT", "/latest/api/token", hdr(ttlH, ttl)); st != 400 {
			t.Errorf("PUT ttl %q: %d, want 400", ttl, st)
		}
	}
	if st, _, _ := e.do("PUT", "/latest/api/token", hdr(ttlH, "60", "X-Forwarded-For", "10.0.0.1")); st != 403 {
		t.Errorf("PUT through a proxy: %d, want 403", st)
	}
	if st, _, _ := e.do("GET", "/latest/api/token", hdr(ttlH, "60")); st != 405 {
		t.Errorf("GET on token path: %d, want 405", st)
	}

	st, tok, ttl := e.do("PUT", "/latest/api/token", hdr(ttlH, "60"))
	if st != 200 || ttl != "60" || len(tok) < 40 {
		t.Fatalf("PUT: status %d ttl %q token %q", st, ttl, tok)
	}
	st, body, ttl := e.do("GET", "/latest/meta-data/instance-id", hdr("X-aws-ec2-metadata-token", tok))
	if st != 200 || body != e.inst.ID || ttl != "60" {
		t.Fatalf("GET with token: %d %q ttl %q", st, body, ttl)
	}

	// Tokens expire: move the server's clock past the TTL.
	e.s.setClock(func() time.Time { return time.Now().Add(61 * time.Second) })
	if st, _, _ := e.do("GET", "/latest/meta-data/instance-id", hdr("X-aws-ec2-metadata-token", tok)); st != 401 {
		t.Errorf("GET with expired token: %d, want 401", st)
	}
	e.s.setClock(time.Now)

	// A token is only good on the IMDS of the instance that got it.
	other := e.addInstance("us-east-1a", nil)
	srv := httptest.NewServer(e.s.IMDSHandler(other))
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/latest/meta-data/instance-id", nil)
	req.Header.Set("X-aws-ec2-metadata-token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("token of another instance: %d, want 401", resp.StatusCode)
	}
}

func TestIMDSv1OnlyKnob(t *testing.T) {
	e := newEnv(t)
	if err := e.w.Update(func(w *World) error { w.Instances[e.inst.ID].IMDSv1Only = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := e.do("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}); st != 403 {
		t.Errorf("token PUT on v1-only IMDS: %d, want 403", st)
	}
	if st, body, _ := e.do("GET", "/latest/meta-data/instance-id", nil); st != 200 || body != e.inst.ID {
		t.Errorf("v1 GET: %d %q", st, body)
	}
	// An SDK client that refuses IMDSv1 must fail here.
	if _, err := e.imdsClient().GetMetadata(context.Background(), &imds.GetMetadataInput{Path: "instance-id"}); err == nil {
		t.Error("imds client with fallback disabled succeeded against a v1-only IMDS")
	}
}

func TestIMDSFailFirstAndDelay(t *testing.T) {
	e := newEnv(t)
	e.w.Update(func(w *World) error {
		w.Instances[e.inst.ID].IMDSFailFirst = 2
		w.Instances[e.inst.ID].IMDSDelay = 30 * time.Millisecond
		return nil
	})
	hdr := map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"}
	start := time.Now()
	for i, want := range []int{503, 503, 200} {
		if st, _, _ := e.do("PUT", "/latest/api/token", hdr); st != want {
			t.Errorf("request %d: %d, want %d", i, st, want)
		}
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("3 requests took %v, want ≥ 90ms of injected delay", d)
	}
	if i, _ := e.w.Instance(e.inst.ID); i.IMDSFailFirst != 0 {
		t.Errorf("IMDSFailFirst left at %d", i.IMDSFailFirst)
	}
}

func TestIMDSListingsAndNotices(t *testing.T) {
	e := newEnv(t)
	tok := map[string]string{"X-aws-ec2-metadata-token": e.token("300")}
	get := func(path string) (int, string) {
		st, body, _ := e.do("GET", path, tok)
		return st, body
	}
	st, body := get("/latest/meta-data/")
	for _, want := range []string{"ami-id", "instance-id", "instance-type", "placement/", "iam/", "local-ipv4", "hostname"} {
		if !strings.Contains("\n"+body+"\n", "\n"+want+"\n") {
			t.Errorf("meta-data listing lacks %q: %q", want, body)
		}
	}
	if st != 200 || strings.Contains(body, "spot/") {
		t.Errorf("listing before any notice: %d %q", st, body)
	}
	if _, body := get("/latest/meta-data/placement"); body != "availability-zone\navailability-zone-id\nregion" {
		t.Errorf("placement listing = %q", body)
	}
	if _, body := get("/latest/meta-data/placement/availability-zone-id"); body != "use1-az1" {
		t.Errorf("zone id = %q", body)
	}
	if _, body := get("/latest/"); body != "dynamic\nmeta-data\nuser-data" {
		t.Errorf("/latest/ = %q", body)
	}
	// Dated versions serve the same tree.
	if st, body := get("/2021-07-15/meta-data/instance-id"); st != 200 || body != e.inst.ID {
		t.Errorf("dated version: %d %q", st, body)
	}
	for _, p := range []string{"/latest/meta-data/spot/instance-action", "/latest/meta-data/events/recommendations/rebalance",
		"/latest/meta-data/nope", "/latest/nope", "/latest/meta-data/iam/security-credentials/other-role"} {
		if st, _ := get(p); st != 404 {
			t.Errorf("%s: %d, want 404", p, st)
		}
	}

	// The identity document is the AWS layout.
	_, doc := get("/latest/dynamic/instance-identity/document")
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("identity document: %v\n%s", err, doc)
	}
	for _, k := range []string{"accountId", "architecture", "availabilityZone", "billingProducts", "imageId",
		"instanceId", "instanceType", "kernelId", "pendingTime", "privateIp", "ramdiskId", "region", "version"} {
		if _, ok := m[k]; !ok {
			t.Errorf("identity document lacks %s", k)
		}
	}
	if !strings.Contains(doc, `"version" : "2017-09-30"`) {
		t.Errorf("identity document layout: %s", doc)
	}

	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e.s.PostSpotAction(e.inst.ID, "terminate", at)
	e.s.PostRebalance(e.inst.ID, at.Add(-time.Minute))
	st, body = get("/latest/meta-data/spot/instance-action")
	var act struct{ Action, Time string }
	if err := json.Unmarshal([]byte(body), &act); st != 200 || err != nil || act.Action != "terminate" || act.Time != "2026-03-01T12:00:00Z" {
		t.Errorf("instance-action: %d %q (%v)", st, body, err)
	}
	if _, body := get("/latest/meta-data/spot/termination-time"); body != "2026-03-01T12:00:00Z" {
		t.Errorf("termination-time = %q", body)
	}
	if _, body := get("/latest/meta-data/events/recommendations/rebalance"); body != `{"noticeTime": "2026-03-01T11:59:00Z"}` {
		t.Errorf("rebalance = %q", body)
	}
	if _, body := get("/latest/meta-data/"); !strings.Contains(body, "spot/") {
		t.Errorf("listing after notice lacks spot/: %q", body)
	}
	// Notices persist with the world.
	w2, err := Load(e.w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if i, _ := w2.Instance(e.inst.ID); i.SpotAction == nil || !i.SpotAction.Time.Equal(at) || i.Rebalance == nil {
		t.Errorf("notices not persisted: %+v %v", i.SpotAction, i.Rebalance)
	}
	e.s.ClearNotices(e.inst.ID)
	if st, _ := get("/latest/meta-data/spot/instance-action"); st != 404 {
		t.Errorf("instance-action after clear: %d", st)
	}

	// No role: no credentials; no user data: 404.
	bare := e.addInstance("us-east-1a", func(i *Instance) { i.Role = "" })
	srv := httptest.NewServer(e.s.IMDSHandler(bare))
	defer srv.Close()
	c := imds.New(imds.Options{Endpoint: srv.URL, EnableFallback: aws.FalseTernary})
	if _, err := c.GetMetadata(context.Background(), &imds.GetMetadataInput{Path: "iam/security-credentials/"}); err == nil {
		t.Error("role list of an instance without role: want 404")
	}
	if _, err := c.GetUserData(context.Background(), nil); err == nil {
		t.Error("empty user-data: want 404")
	}
}
