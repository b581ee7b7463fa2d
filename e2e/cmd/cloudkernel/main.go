// Command cloudkernel prints the lib/modules/<release> directory of the
// Debian cloud kernel the e2e tests boot, downloading it with apt-get into
// ~/.cache/spotroot first if needed. `make initramfs` uses it on a build
// host without modules for its running kernel; the shipped
// spotroot-initramfs itself knows nothing of e2e/.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spotroot/spotroot/e2e/kernel"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	k, err := kernel.Ensure(ctx, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cloudkernel:", err)
		os.Exit(1)
	}
	fmt.Println(k.ModulesDir)
}
