package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// LazyBlock is the unit an EBS volume made from a snapshot loads from S3
// on first read: EBS snapshots store data in 512 KiB blocks (the EBS
// direct APIs' block size, https://docs.aws.amazon.com/ebs/latest/userguide/ebsapis-using-apis.html).
const LazyBlock = 512 << 10

// lazyDisk serves image read-only over NBD, the first read of each
// LazyBlock delayed by latency and later reads served from a cache: an
// EC2 root volume made from an AMI, whose blocks are "pulled down from
// Amazon S3" the first time each is read, with "a significant increase in
// the latency of I/O operations" until then
// (https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html;
// awslabs/amazon-eks-ami#2011 reads kubelet ahead at boot for that reason).
// AWS gives no figure for the latency: the caller chooses it.
//
// nbdkit's cache filter (outermost, cache-on-read) answers blocks read
// before; its misses go through the delay filter to the file. It returns
// the NBD URI of the export and the server process (the caller kills it
// when the VM is gone).
func lazyDisk(ctx context.Context, dir, image string, latency time.Duration) (string, *exec.Cmd, error) {
	if _, err := exec.LookPath("nbdkit"); err != nil {
		return "", nil, fmt.Errorf("a lazily loaded root disk needs nbdkit (apt-get install nbdkit; e2e/setup.sh installs it): %w", err)
	}
	sock := filepath.Join(dir, "lazy-root.sock")
	cmd := exec.Command("nbdkit", "--foreground", "--exit-with-parent", "--readonly", "--unix", sock,
		"--filter=cache", "--filter=delay", "file", "file="+image,
		fmt.Sprintf("rdelay=%dms", latency.Milliseconds()),
		"cache-on-read=true", fmt.Sprintf("cache-min-block-size=%d", LazyBlock))
	cmd.Env = append(os.Environ(), "TMPDIR="+dir) // its cache file
	errFile, err := os.Create(filepath.Join(dir, "nbdkit.stderr"))
	if err != nil {
		return "", nil, err
	}
	defer errFile.Close()
	cmd.Stderr = errFile
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start nbdkit for %s: %w", image, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return "nbd+unix:///?socket=" + sock, cmd, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cmd.Process.Kill()
			cmd.Wait()
			b, _ := os.ReadFile(filepath.Join(dir, "nbdkit.stderr"))
			return "", nil, fmt.Errorf("nbdkit for %s: no socket after 10 s: %s", image, b)
		}
	}
}
