package packaging_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/spotroot/spotroot/internal/testenv"
)

var helpFlag = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)

// The bash completion and the man page know every command and flag the
// binary's --help lists, and the man page every exit status.
func TestCompletionAndManPageMatchTheCLI(t *testing.T) {
	bin := spotrootBin(t)
	comp, _ := os.ReadFile("completion/spotroot")
	man, _ := os.ReadFile("deb/spotroot.8")
	if out, err := exec.Command("bash", "-n", "completion/spotroot").CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v %s", err, out)
	}
	cmds := map[string][]string{"config check": {"config", "check"}, "volume create": {"volume", "create"}, "install": {"install"},
		"status": {"status"}, "watch": {"watch"}, "userdata": {"userdata"}, "launch": {"launch"}, "iam-policy": {"iam-policy"}}
	for name, args := range cmds {
		out, err := exec.Command(bin, append(args, "--help")...).Output()
		if err != nil {
			t.Fatalf("%s --help: %v", name, err)
		}
		if !strings.Contains(string(comp), strings.Fields(name)[0]) {
			t.Errorf("completion lacks the command %s", name)
		}
		if !strings.Contains(string(man), ".B "+strings.ReplaceAll(name, "-", "\\-")) {
			t.Errorf("man page lacks the command %s", name)
		}
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			if !strings.Contains(string(comp), "--"+m[1]) {
				t.Errorf("completion of %s lacks --%s", name, m[1])
			}
		}
	}
	for _, sec := range []string{".SH EXIT STATUS", ".SH FILES", ".SH KERNEL COMMAND LINE", ".SH ENVIRONMENT", ".SH COMMANDS"} {
		if !strings.Contains(string(man), sec) {
			t.Errorf("man page lacks %s", sec)
		}
	}
	for _, code := range []string{"0", "1", "2", "3", "4"} {
		if !strings.Contains(string(man), ".TP\n.B "+code+"\n") {
			t.Errorf("man page does not document exit status %s", code)
		}
	}
	for _, p := range []string{"spotroot.volume=", "spotroot.init=", "spotroot.image_init=", "spotroot.ec2_endpoint=", "spotroot.disable"} {
		if !strings.Contains(strings.ReplaceAll(string(man), "\\fB", ""), p) {
			t.Errorf("man page lacks the kernel parameter %s", p)
		}
	}
}

// The example webhook hook posts a Slack-style {"text": …} body built
// from the watcher's environment.
func TestWebhookHook(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		testenv.Skip(t, "curl not installed")
	}
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &got) != nil {
			http.Error(rw, "bad body", 400)
		}
	}))
	defer srv.Close()
	cmd := exec.Command("sh", "examples/hooks/50-webhook", "spot", "terminate")
	cmd.Env = append(os.Environ(), "SPOTROOT_WEBHOOK_URL="+srv.URL, "SPOTROOT_KIND=spot", "SPOTROOT_ACTION=terminate",
		"SPOTROOT_TIME=2026-12-02T02:00:00Z", "SPOTROOT_DEADLINE=2026-12-02T01:59:45Z", "SPOTROOT_INSTANCE_ID=i-0123456789abcdef0",
		`SPOTROOT_NOTICE={"action": "terminate", "time": "2026-12-02T02:00:00Z"}`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hook: %v\n%s", err, out)
	}
	text, _ := got["text"].(string)
	if !strings.Contains(text, "i-0123456789abcdef0") || !strings.Contains(text, "spot notice, action terminate at 2026-12-02T02:00:00Z") {
		t.Fatalf("webhook body %v", got)
	}
	if sr, _ := got["spotroot"].(map[string]any); sr["notice"] != `{"action": "terminate", "time": "2026-12-02T02:00:00Z"}` {
		t.Fatalf("raw notice not passed through: %v", got)
	}
}

// Product code (what the .deb ships) never imports e2e/.
func TestShippedCommandsImportNoE2E(t *testing.T) {
	for _, tags := range []string{"", "pid1"} {
		out, err := exec.Command("go", "list", "-tags", tags, "-deps", "../cmd/...", "../initramfs/cmd/...", "../internal/...").CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		for _, p := range strings.Fields(string(out)) {
			if strings.HasPrefix(p, "github.com/spotroot/spotroot/e2e") {
				t.Errorf("product code (tags %q) depends on %s", tags, p)
			}
		}
	}
}
