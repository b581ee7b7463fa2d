package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit status of every command (spotroot(8), EXIT STATUS).
const (
	exitOK      = 0 // done
	exitFail    = 1 // the operation failed (AWS error, invalid configuration, refused install)
	exitUsage   = 2 // unknown command, subcommand or flag; stray argument
	exitNoIMDS  = 3 // IMDS cannot be reached: not on an EC2 instance (status, watch)
	exitTimeout = 4 // gave up waiting; the operation may still complete (volume create prints how to resume)
)

const exitStatusHelp = `Exit status: 0 done; 1 failed; 2 usage error (unknown command, subcommand,
flag or a stray argument); 3 IMDS unreachable (not on EC2); 4 gave up
waiting (the operation may still complete; the command to resume is printed).
`

// newFlags makes the flag set of "spotroot NAME"; usage is the text shown
// before the flags by --help (on stdout) and after a usage error (stderr).
func newFlags(name, usage string, stdio stdio) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stdio.err)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\n"+exitStatusHelp)
	}
	return fs
}

// helpAsked reports whether args ask for help before any "--".
func helpAsked(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// active is the stdio of the running command, for parse.
var active = stdio{out: io.Discard, err: io.Discard}

// parse is parseFlags with the running command's stdio.
func parse(fs *flag.FlagSet, args []string) (code int, done bool) {
	return parseFlags(fs, args, active)
}

// parseFlags parses flags; done is true when the command should exit with code.
// --help prints the usage and every flag on stdout and exits 0; a usage
// error (unknown flag, bad value, stray argument) goes to stderr, exit 2.
func parseFlags(fs *flag.FlagSet, args []string, stdio stdio) (code int, done bool) {
	if helpAsked(args) {
		fs.SetOutput(stdio.out)
		fs.Usage()
		fs.SetOutput(stdio.err)
		return exitOK, true
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stdio.err, "spotroot %s: unexpected argument %q (flags come before arguments; see spotroot %s --help)\n", fs.Name(), fs.Arg(0), fs.Name())
		return exitUsage, true
	}
	return exitOK, false
}

// outputFlag adds --output text|json.
func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("output", "text", "result format: text or json (results on stdout, progress and logs on stderr)")
}

func checkOutput(name, o string, stdio stdio) bool {
	if o == "text" || o == "json" {
		return true
	}
	fmt.Fprintf(stdio.err, "spotroot %s: --output %q: use text or json\n", name, o)
	return false
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// subcommandError reports an unknown or missing subcommand.
func subcommandError(cmd string, args []string, known []string, stdio stdio) int {
	if len(args) == 0 {
		fmt.Fprintf(stdio.err, "spotroot %s: missing subcommand (one of: %s); see spotroot %s --help\n", cmd, strings.Join(known, ", "), cmd)
	} else {
		fmt.Fprintf(stdio.err, "spotroot %s: unknown subcommand %q (one of: %s); see spotroot %s --help\n", cmd, args[0], strings.Join(known, ", "), cmd)
	}
	return exitUsage
}
