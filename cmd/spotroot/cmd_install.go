package main

import (
	"flag"
	"fmt"

	"github.com/spotroot/spotroot/internal/install"
)

func init() {
	register(command{name: "install", summary: "install spotroot into an image root (or remove it)", run: installCmd})
}

const installUsage = `usage: spotroot install [--root DIR] [--method init-arg|sbin-init] [--uninstall]

Copies this binary to DIR/usr/sbin/spotroot (DIR: a mounted AMI volume, or /
on the build instance) and makes the image boot it:
  init-arg   adds init=/usr/sbin/spotroot to GRUB_CMDLINE_LINUX in
             DIR/etc/default/grub (run update-grub in the image afterwards);
             /sbin/init is left alone
  sbin-init  moves the image's init to /sbin/init.real, links /sbin/init to
             /usr/sbin/spotroot and records image_init: /sbin/init.real in
             DIR/etc/spotroot/config.yaml
Both are idempotent; --uninstall reverses them. Refuses a root whose
/sbin/init it cannot identify (spotroot falls back to it on any failure).

Flags:
`

func installCmd(args []string, stdio stdio) int {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(stdio.err)
	var o install.Opts
	fs.StringVar(&o.Root, "root", "/", "image root")
	fs.StringVar(&o.Method, "method", "sbin-init", "init-arg or sbin-init")
	fs.StringVar(&o.Source, "binary", "", "spotroot binary to install (default: this one)")
	uninstall := fs.Bool("uninstall", false, "remove spotroot and restore the image's init")
	fs.Usage = func() { fmt.Fprint(stdio.err, installUsage); fs.PrintDefaults() }
	if code, done := parse(fs, args); done {
		return code
	}
	o.Out = stdio.out
	var err error
	if *uninstall {
		err = install.Uninstall(o)
	} else {
		err = install.Install(o)
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot install: %v\n", err)
		return 1
	}
	return 0
}
