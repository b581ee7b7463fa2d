package watch

import (
	"bytes"
	"context"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/sim"
)

// Auto Scaling's target lifecycle state: Terminated runs the hooks and
// powers off, like the node termination handler's ASG lifecycle monitor
// drains; InService is no notice.
func TestAutoScalingTargetLifecycleState(t *testing.T) {
	e := newSim(t, nil)
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "hook.out")
	os.WriteFile(filepath.Join(dir, "10-record"), []byte("#!/bin/sh\necho \"$SPOTROOT_KIND $SPOTROOT_ACTION $SPOTROOT_INSTANCE_ID\" >> "+out+"\n"), 0o755)
	var lb bytes.Buffer
	shut := 0
	w := New(Options{Endpoint: e.url, HooksDir: dir, Log: log.New(&lb, "", 0),
		Shutdown: func(context.Context) error { shut++; return nil }})
	ctx := context.Background()
	e.s.SetTargetLifecycleState(e.id, "InService")
	if w.Poll(ctx) || shut != 0 || w.Err() != nil {
		t.Fatalf("InService: down, shut %d, err %v\n%s", shut, w.Err(), lb.String())
	}
	e.s.SetTargetLifecycleState(e.id, "Terminated")
	if !w.Poll(ctx) || shut != 1 {
		t.Fatalf("Terminated: no power-off (shut %d)\n%s", shut, lb.String())
	}
	b, _ := os.ReadFile(out)
	if got := strings.TrimSpace(string(b)); got != "autoscaling Terminated "+e.id {
		t.Fatalf("hook saw %q", got)
	}
}

// A relative --hooks-dir used to fail: hooks run with / as working directory.
func TestRelativeHooksDir(t *testing.T) {
	e := newSim(t, nil)
	base := t.TempDir()
	t.Chdir(base)
	os.Mkdir("hooks", 0o755)
	os.WriteFile("hooks/10-touch", []byte("#!/bin/sh\ntouch "+filepath.Join(base, "ran")+"\n"), 0o755)
	var lb bytes.Buffer
	w := New(Options{Endpoint: e.url, HooksDir: "hooks", Log: log.New(&lb, "", 0), Shutdown: func(context.Context) error { return nil }})
	e.s.PostSpotAction(e.id, "terminate", time.Now().Add(2*time.Minute))
	w.Poll(context.Background())
	if _, err := os.Stat(filepath.Join(base, "ran")); err != nil {
		t.Fatalf("hook in a relative --hooks-dir did not run:\n%s", lb.String())
	}
}

// Off EC2 the watcher stops retrying after GiveUpAfter; on EC2 it never does.
func TestGivesUpOffEC2(t *testing.T) {
	var lb bytes.Buffer
	now := time.Unix(0, 0)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	w := New(Options{Endpoint: "http://127.0.0.1:1", Interval: time.Millisecond, Log: log.New(&lb, "", 0), Now: clock,
		GiveUpAfter: 30 * time.Second, OnEC2: func() bool { return false }})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Run(ctx); err == nil || !strings.Contains(err.Error(), "not an EC2 instance") {
		t.Fatalf("off EC2: %v", err)
	}
	now = time.Unix(0, 0)
	w = New(Options{Endpoint: "http://127.0.0.1:1", Interval: time.Millisecond, Log: log.New(&lb, "", 0), Now: clock,
		GiveUpAfter: 30 * time.Second, OnEC2: func() bool { return true }})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if err := w.Run(ctx2); err != nil {
		t.Fatalf("on EC2 the watcher must keep trying: %v", err)
	}
}

func TestOnEC2FromDMI(t *testing.T) {
	root := t.TempDir()
	if OnEC2(root) {
		t.Fatal("empty root is EC2")
	}
	os.MkdirAll(filepath.Join(root, "sys/class/dmi/id"), 0o755)
	os.WriteFile(filepath.Join(root, "sys/class/dmi/id/sys_vendor"), []byte("QEMU\n"), 0o644)
	if OnEC2(root) {
		t.Fatal("QEMU is EC2")
	}
	os.WriteFile(filepath.Join(root, "sys/class/dmi/id/sys_vendor"), []byte("Amazon EC2\n"), 0o644)
	if !OnEC2(root) {
		t.Fatal("Nitro DMI not recognised")
	}
	root2 := t.TempDir()
	os.MkdirAll(filepath.Join(root2, "sys/hypervisor"), 0o755)
	os.WriteFile(filepath.Join(root2, "sys/hypervisor/uuid"), []byte("ec2e1916-9099-7caf-fd21-012345abcdef\n"), 0o644)
	if !OnEC2(root2) {
		t.Fatal("Xen uuid not recognised")
	}
}

var _ = sim.NewInstanceID
