package watch

import (
	"github.com/spotroot/spotroot/internal/testenv"

	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// aemm runs AWS's amazon-ec2-metadata-mock (the Go tool dependency pinned in
// go.mod) on 127.0.0.1 in IMDSv2-only mode with args, and returns its URL.
func aemm(t *testing.T, args ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds amazon-ec2-metadata-mock")
	}
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Skip(t, "go command not found (setup installs Go)")
	}
	bin := filepath.Join(aemmDir(t), "ec2-metadata-mock")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	home := t.TempDir() // no ~/aemm-config.json from the user
	full := append(args, "--hostname", "127.0.0.1", "--port", fmt.Sprint(port), "--imdsv2")
	cmd := exec.Command(bin, full...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Dir = home
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		req, _ := http.NewRequest(http.MethodPut, url+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 300 {
			t.Fatalf("ec2-metadata-mock %s does not answer: %v\n%s", strings.Join(full, " "), err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return url
}

var aemmBuilt string

func aemmDir(t *testing.T) string {
	t.Helper()
	if aemmBuilt != "" {
		return aemmBuilt
	}
	dir, err := os.MkdirTemp("", "aemm-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", dir, "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build ec2-metadata-mock: %v\n%s", err, out)
	}
	aemmBuilt = dir
	return dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if aemmBuilt != "" {
		os.RemoveAll(aemmBuilt)
	}
	os.Exit(code)
}

func mockWatcher(t *testing.T, url string, o Options) (*Watcher, *bytes.Buffer, *int) {
	var lb bytes.Buffer
	n := 0
	o.Endpoint, o.Log = url, log.New(&lb, "", 0)
	o.HooksDir = t.TempDir()
	o.Shutdown = func(context.Context) error { n++; return nil }
	return New(o), &lb, &n
}

func TestAEMMSpotTerminateIMDSv2Only(t *testing.T) {
	url := aemm(t, "spot", "--action", "terminate")
	// IMDSv2-only: a request without a token is refused, so passing
	// below proves the watcher uses tokens.
	resp, err := http.Get(url + "/latest/meta-data/spot/instance-action")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("IMDSv1 GET answered %d, want 401 (mock not in IMDSv2-only mode)", resp.StatusCode)
	}
	w, lb, shut := mockWatcher(t, url, Options{})
	ns, err := w.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var spot *Notice
	for i := range ns {
		if ns[i].Kind == "spot" {
			spot = &ns[i]
		}
	}
	if spot == nil || spot.Action != "terminate" || spot.Time.IsZero() {
		t.Fatalf("notices %+v, want a spot terminate with a time", ns)
	}
	if !w.Poll(context.Background()) || *shut != 1 {
		t.Fatalf("no shutdown for the mock's terminate notice:\n%s", lb)
	}
}

func TestAEMMSpotStopAndRebalance(t *testing.T) {
	url := aemm(t, "spot", "--action", "stop", "--rebalance-rec-time", time.Now().UTC().Format(time.RFC3339))
	w, _, _ := mockWatcher(t, url, Options{})
	ns, err := w.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]string{}
	for _, n := range ns {
		kinds[n.Kind] = n.Action
	}
	if kinds["spot"] != "stop" || kinds["rebalance"] != "rebalance" {
		t.Fatalf("notices %+v, want spot stop and a rebalance recommendation", ns)
	}
}

func TestAEMMScheduledEvent(t *testing.T) {
	url := aemm(t, "events", "--code", "instance-stop", "--state", "active")
	w, lb, shut := mockWatcher(t, url, Options{})
	ns, err := w.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 1 || ns[0].Kind != "maintenance" || ns[0].Action != "instance-stop" || ns[0].Time.IsZero() {
		t.Fatalf("notices %+v, want one active instance-stop maintenance event", ns)
	}
	if w.Poll(context.Background()) || *shut != 0 || !strings.Contains(lb.String(), "maintenance notice: action=instance-stop") {
		t.Fatalf("maintenance event: shutdown %d, log:\n%s", *shut, lb)
	}
}
