package blockdev

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/spotroot/spotroot/internal/testenv"
)

// cutWriter lets the first n writes through, then "loses power": the
// write n+1 lands only half (torn) when torn is set, and nothing after.
type cutWriter struct {
	*os.File
	n    int
	torn bool
}

var errPowerCut = errors.New("power cut")

func (c *cutWriter) WriteAt(b []byte, off int64) (int, error) {
	if c.n == 0 {
		if c.torn {
			c.File.WriteAt(b[:len(b)/2], off)
			c.torn = false
		}
		return 0, errPowerCut
	}
	c.n--
	return c.File.WriteAt(b, off)
}

// TestRenewClashingGPTSurvivesACut: a volume made from the image's disk
// carries the image's disk GUID and PARTUUIDs. The fix is cut after every
// one of its writes (and with the next write torn); each time the disk
// keeps a valid GPT with the same layout, the filesystem is untouched, and
// the next boot's run finishes the job.
func TestRenewClashingGPTSurvivesACut(t *testing.T) {
	requireTool(t, "mkfs.ext4")
	requireTool(t, "sfdisk")
	dir := t.TempDir()
	src := filepath.Join(dir, "image.img")
	run(t, "truncate", "-s", "40M", src)
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	must(t, err)
	table := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 4095, Type: gpt.BIOSBoot, Name: "bios"},
		{Index: 2, Start: 8192, End: 8192 + 16*2048 - 1, Type: gpt.LinuxFilesystem, Name: "root"},
	}}
	must(t, table.Write(f, 40<<20))
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", "-L", "persist", "-E", "offset="+itoa(8192*512), src, "16M")
	img, ok := readID(t, src)
	if !ok || len(img.Parts) != 2 {
		t.Fatalf("image identity = %+v, %v", img, ok)
	}
	// Writes: protective MBR, backup array, backup header, primary array,
	// primary header.
	for cut := 0; cut <= 5; cut++ {
		for _, torn := range []bool{false, true} {
			vol := filepath.Join(dir, "vol.img")
			copyFile(t, src, vol)
			f, err := os.OpenFile(vol, os.O_RDWR, 0)
			must(t, err)
			_, err = RenewClashingGPT(&cutWriter{File: f, n: cut, torn: torn}, 40<<20, 512, img)
			f.Close()
			if cut < 5 && (err == nil || !strings.Contains(err.Error(), errPowerCut.Error())) {
				t.Fatalf("cut %d: err = %v, want the power cut", cut, err)
			}
			// After the cut: a valid table with the image's layout.
			if _, ok := readID(t, vol); !ok {
				t.Fatalf("cut %d torn %v: no valid GPT left", cut, torn)
			}
			c := choose(t, vol, "")
			if c.Partition != 2 || c.FS.Label != "persist" {
				t.Fatalf("cut %d torn %v: filesystem = %+v", cut, torn, c)
			}
			// A second, independent reader (util-linux, which falls back
			// to the backup GPT like the kernel) agrees.
			if out, err := exec.Command("sfdisk", "--dump", vol).CombinedOutput(); err != nil || strings.Count(string(out), "type=") != 2 {
				t.Fatalf("cut %d torn %v: sfdisk --dump: %v\n%s", cut, torn, err, out)
			}
			// The next boot.
			f, err = os.OpenFile(vol, os.O_RDWR, 0)
			must(t, err)
			_, err = RenewClashingGPT(f, 40<<20, 512, img)
			f.Close()
			must(t, err)
			got, ok := readID(t, vol)
			if !ok || got.Disk == img.Disk || len(got.Parts) != 2 {
				t.Fatalf("cut %d torn %v: after the next boot: %+v", cut, torn, got)
			}
			for _, p := range got.Parts {
				for _, q := range img.Parts {
					if strings.EqualFold(p, q) {
						t.Fatalf("cut %d torn %v: PARTUUID %s still the image's", cut, torn, p)
					}
				}
			}
			if c := choose(t, vol, ""); c.Partition != 2 || c.FS.Label != "persist" || c.Label != "root" {
				t.Fatalf("cut %d torn %v: filesystem after the fix = %+v", cut, torn, c)
			}
			// A third run changes nothing.
			f, _ = os.OpenFile(vol, os.O_RDWR, 0)
			changed, err := RenewClashingGPT(f, 40<<20, 512, img)
			f.Close()
			if err != nil || len(changed) != 0 {
				t.Fatalf("cut %d: a repeat changed %v, %v", cut, changed, err)
			}
		}
	}
}

func readID(t *testing.T, path string) (GPTIdentity, bool) {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	return ReadGPTIdentity(f, 512)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	must(t, err)
	must(t, os.WriteFile(dst, b, 0o644))
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		testenv.Skip(t, name+" not installed (e2e/setup.sh installs it)")
	}
}
