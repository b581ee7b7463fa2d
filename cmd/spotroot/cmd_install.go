package main

import (
	"fmt"

	"github.com/spotroot/spotroot/internal/install"
)

func init() {
	register(command{name: "install", summary: "install spotroot into an image root (or remove it)", run: installCmd})
}

const installUsage = `usage: spotroot install [--root DIR] [--method sbin-init|init-arg] [--binary FILE]
       spotroot install --uninstall [--root DIR]

Copies this binary to DIR/usr/sbin/spotroot (DIR: a mounted AMI volume, or /
on the build instance) and makes the image boot it:
  sbin-init  (default) takes /sbin/init over: on a dpkg-managed image with
             'dpkg-divert --local --rename --divert /sbin/init.real', so an
             upgrade of the package owning /sbin/init (systemd-sysv) installs
             its init as /sbin/init.real and spotroot stays in front;
             elsewhere a rename. /sbin/init becomes a link to spotroot.
  init-arg   adds init=/usr/sbin/spotroot to GRUB_CMDLINE_LINUX in
             DIR/etc/default/grub (run update-grub in the image afterwards);
             /sbin/init is left alone.
Both record image_init (the fallback init) in DIR/etc/spotroot/config.yaml,
leaving the rest of that file as it is. Every check runs before the first
change, and a failing step undoes the earlier ones: the image is never left
half-switched. Both are idempotent. Refuses a root whose /sbin/init it
cannot identify (spotroot falls back to it on any failure).

--uninstall finds out which method is installed and reverses it (the
diversion, the GRUB argument, the recorded image_init, the binary).
`

func installCmd(args []string, stdio stdio) int {
	fs := newFlags("install", installUsage, stdio)
	var o install.Opts
	fs.StringVar(&o.Root, "root", "/", "image root")
	fs.StringVar(&o.Method, "method", "", "sbin-init (default) or init-arg; --uninstall detects it")
	fs.StringVar(&o.Source, "binary", "", "spotroot binary to install (default: this one)")
	uninstall := fs.Bool("uninstall", false, "remove spotroot and restore the image's init")
	if code, done := parseFlags(fs, args, stdio); done {
		return code
	}
	o.Out = stdio.out
	var err error
	if *uninstall {
		err = install.Uninstall(o)
	} else {
		if o.Method == "" {
			o.Method = "sbin-init"
		}
		err = install.Install(o)
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot install: %v\n", err)
		return exitFail
	}
	return exitOK
}
