// Command spotroot boots an EC2 Spot instance from its persistent EBS volume.
//
// Baked into an image as /sbin/init (or started with init=…), it runs as
// PID 1: it claims the instance's tagged volume, pivots into it and execs the
// volume's own init. Run by an operator, it offers helper subcommands.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spotroot/spotroot/internal/boot"
)

var version = "dev"

// command is one subcommand. Each lives in its own cmd_<name>.go file and
// registers itself in init, so subcommands are added without touching main.
type command struct {
	name    string
	summary string
	run     func(args []string, stdio stdio) int
}

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

func main() {
	if os.Getpid() == 1 {
		boot.Run() // never returns
	}
	os.Exit(run(os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr}))
}

func run(args []string, io stdio) int {
	active = io
	if len(args) == 0 {
		usage(io.err)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help":
		usage(io.out)
		return exitOK
	case "help":
		if len(args) > 1 {
			if _, ok := commands[args[1]]; ok {
				return run([]string{args[1], "--help"}, io)
			}
			fmt.Fprintf(io.err, "spotroot help: unknown command %q\n", args[1])
			return exitUsage
		}
		usage(io.out)
		return exitOK
	case "version", "--version":
		if len(args) > 1 && !helpAsked(args[1:]) {
			fmt.Fprintf(io.err, "spotroot version: unexpected argument %q\n", args[1])
			return exitUsage
		}
		fmt.Fprintln(io.out, "spotroot", version)
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(io.err, "spotroot: unknown command %q (run spotroot --help for the list)\n", args[0])
		return exitUsage
	}
	return c.run(args[1:], io)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `spotroot — boot a Spot instance from its persistent EBS volume

usage: spotroot COMMAND [flags] [arguments]

As PID 1 (installed as /sbin/init or via init=) spotroot claims the instance's
volume, switches root into it and execs its init.

Commands:
`)
	for _, n := range commandNames() {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "  %-12s %s\n  %-12s %s\n\n", "help", "help [COMMAND]: this text, or a command's", "version", "print the version")
	fmt.Fprint(w, "Run 'spotroot COMMAND --help' for a command's flags. Results go to standard\noutput, progress and logs to standard error; see spotroot(8).\n\n"+exitStatusHelp)
}

func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// wantsHelp reports whether args ask for help, for commands that take no flags.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "--help" || strings.EqualFold(a, "help") {
			return true
		}
	}
	return false
}
