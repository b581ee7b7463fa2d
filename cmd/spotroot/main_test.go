package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(stdin string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, stdio{strings.NewReader(stdin), &out, &errb})
	return code, out.String(), errb.String()
}

func TestConfigCheck(t *testing.T) {
	good := "#cloud-config\nspotroot:\n  volume:\n    tag: {Name: home-root}\n"
	code, out, _ := runCmd(good, "config", "check", "-")
	if code != 0 || !strings.Contains(out, "tag Name=home-root → /") {
		t.Fatalf("good: code %d out %q", code, out)
	}
	f := filepath.Join(t.TempDir(), "ud")
	os.WriteFile(f, []byte("#cloud-config\nspotroot:\n  volume:\n    tag: {Name: x}\n  bogus: 1\n"), 0o644)
	code, _, errOut := runCmd("", "config", "check", f)
	if code != 1 || !strings.Contains(errOut, "user-data line 5: spotroot.bogus: unknown field") {
		t.Fatalf("bad: code %d err %q", code, errOut)
	}
	code, _, errOut = runCmd("#cloud-config\npackages: [x]\n", "config", "check")
	if code != 1 || !strings.Contains(errOut, "boot the image's own init") {
		t.Fatalf("unconfigured: code %d err %q", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	if code, _, errOut := runCmd("", "frobnicate"); code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Fatalf("unknown: %d %q", code, errOut)
	}
	code, out, _ := runCmd("", "--help")
	if code != 0 || !strings.Contains(out, "config") || !strings.Contains(out, "init") {
		t.Fatalf("help: %d %q", code, out)
	}
}

func TestConfigSchemaChecksClean(t *testing.T) {
	code, schema, _ := runCmd("", "config", "schema")
	if code != 0 || !strings.Contains(schema, "on_failure:") {
		t.Fatalf("schema: %d %q", code, schema)
	}
	if code, out, errOut := runCmd(schema, "config", "check", "-"); code != 0 {
		t.Fatalf("config check rejects the schema it prints: %s %s", out, errOut)
	}
}

// TestREADMEExamples checks every YAML example in the README that
// configures spotroot, as an operator would before launching.
func TestREADMEExamples(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(b), "```yaml\n")
	n := 0
	for _, blk := range blocks[1:] {
		body, _, _ := strings.Cut(blk, "```")
		if !strings.Contains(body, "spotroot:") {
			continue
		}
		n++
		if code, _, errOut := runCmd(body, "config", "check", "-"); code != 0 {
			t.Errorf("README example %d is rejected: %s\n%s", n, errOut, body)
		}
	}
	if n == 0 {
		t.Fatal("no spotroot YAML example found in README.md")
	}
}
