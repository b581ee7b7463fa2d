package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spotroot/spotroot/internal/config"
)

func init() {
	register(command{name: "config", summary: "check user-data as the boot would parse it", run: configCmd})
}

const configUsage = `usage: spotroot config check [FILE|-]
       spotroot config schema

Parses FILE (or standard input) exactly as the boot path parses user-data:
#cloud-config with a spotroot key, a MIME archive with a text/x-spotroot part,
gzip or base64. Prints the effective configuration; exit 0 if valid, 1 if not.
"schema" prints every field with its default, as a commented example.
`

func configCmd(args []string, io stdio) int {
	switch {
	case len(args) > 0 && args[0] == "schema":
		fmt.Fprint(io.out, config.Example)
		return 0
	case len(args) > 0 && args[0] == "check" && !wantsHelp(args):
		return configCheck(args[1:], io)
	case wantsHelp(args):
		fmt.Fprint(io.out, configUsage)
		return 0
	}
	fmt.Fprint(io.err, configUsage)
	return 2
}

func configCheck(args []string, stdio stdio) int {
	var data []byte
	var err error
	if len(args) == 0 || args[0] == "-" {
		data, err = io.ReadAll(stdio.in)
	} else {
		data, err = os.ReadFile(args[0])
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot config check: %v\n", err)
		return 1
	}
	cfg, err := config.Load(nil, data, "")
	if errors.Is(err, config.ErrNotConfigured) {
		fmt.Fprintf(stdio.err, "spotroot config check: %v: the instance would boot the image's own init\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot config check: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdio.out, "ok: %d volume(s)\n", len(cfg.Volumes))
	for _, v := range cfg.Volumes {
		fmt.Fprintf(stdio.out, "  %s → %s\n", v.Describe(), v.Mount)
	}
	fmt.Fprintf(stdio.out, "init: %s\nimage_init: %s\non_failure: %s\n", cfg.Init,
		orDefault(cfg.ImageInit, "(first of /sbin/init.real, systemd)"), orDefault(cfg.OnFailure, "image-init"))
	t := cfg.Timeouts
	fmt.Fprintf(stdio.out, "timeouts: network=%v imds=%v attach=%v device=%v\n", t.Network.D(), t.IMDS.D(), t.Attach.D(), t.Device.D())
	return 0
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
