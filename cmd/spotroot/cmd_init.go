package main

import (
	"fmt"

	"github.com/spotroot/spotroot/internal/boot"
)

func init() {
	register(command{name: "init", summary: "run the boot sequence (what PID 1 does)", run: func(args []string, io stdio) int {
		if wantsHelp(args) {
			fmt.Fprintln(io.out, "usage: spotroot init\n\nRuns the PID 1 boot sequence: claim the volume, switch root, exec its init.\nOnly meaningful as PID 1 (or in a test VM); it never returns.")
			return 0
		}
		boot.Run()
		return 1
	}})
}
