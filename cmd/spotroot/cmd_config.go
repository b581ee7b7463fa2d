package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spotroot/spotroot/internal/config"
)

func init() {
	register(command{name: "config", summary: "check user-data or an image config file as the boot would read it", run: configCmd})
}

const configUsage = `usage: spotroot config check [--kind auto|user-data|image] [--output text|json] [FILE|-]
       spotroot config schema

check parses FILE (or standard input) exactly as the boot path does:
  user-data  #cloud-config with a spotroot key (also behind "## template:
             jinja"), a MIME archive with a text/x-spotroot part, gzip or
             base64;
  image      an image config file such as /etc/spotroot/config.yaml (a
             YAML mapping with a spotroot key, no header).
--kind auto (default) tells them apart by the header. Errors name the line.
It prints the effective configuration and exits 0 if valid, 1 if not (or
if the file configures nothing: the instance would boot the image's own
init). Warnings (things cloud-init reads differently) go to stderr.

schema prints every field with its default, as a commented example.
`

func configCmd(args []string, stdio stdio) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdio.out, configUsage)
		return exitOK
	}
	if len(args) == 0 {
		return subcommandError("config", args, []string{"check", "schema"}, stdio)
	}
	switch args[0] {
	case "schema":
		if helpAsked(args[1:]) {
			fmt.Fprint(stdio.out, configUsage)
			return exitOK
		}
		if len(args) > 1 {
			fmt.Fprintf(stdio.err, "spotroot config schema: unexpected argument %q\n", args[1])
			return exitUsage
		}
		fmt.Fprint(stdio.out, config.Example)
		return exitOK
	case "check":
		return configCheck(args[1:], stdio)
	}
	return subcommandError("config", args, []string{"check", "schema"}, stdio)
}

type checkResult struct {
	File     string      `json:"file"`
	Kind     string      `json:"kind"`
	Valid    bool        `json:"valid"`
	Errors   []string    `json:"errors,omitempty"`
	Warnings []string    `json:"warnings,omitempty"`
	Config   *configJSON `json:"config,omitempty"`
}

type volumeJSON struct {
	Volume    string            `json:"volume"`
	ID        string            `json:"id,omitempty"`
	Tag       map[string]string `json:"tag,omitempty"`
	Pool      map[string]string `json:"pool,omitempty"`
	Mount     string            `json:"mount"`
	Partition string            `json:"partition,omitempty"`
	FSType    string            `json:"fstype,omitempty"`
	Create    *config.Create    `json:"create,omitempty"`
}

type configJSON struct {
	Volumes   []volumeJSON      `json:"volumes"`
	Init      string            `json:"init"`
	ImageInit string            `json:"image_init,omitempty"`
	OnFailure string            `json:"on_failure"`
	CrossAZ   string            `json:"cross_az,omitempty"`
	Timeouts  map[string]string `json:"timeouts"`
	Sources   []string          `json:"sources"`
}

func configCheck(args []string, stdio stdio) int {
	fs := newFlags("config check", configUsage, stdio)
	output := outputFlag(fs)
	kind := fs.String("kind", "auto", "what FILE is: auto, user-data or image")
	if helpAsked(args) {
		return must(parseFlags(fs, args, stdio))
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stdio.err, "spotroot config check: unexpected argument %q (one FILE at a time)\n", fs.Arg(1))
		return exitUsage
	}
	if !checkOutput("config check", *output, stdio) {
		return exitUsage
	}
	file := fs.Arg(0)
	var data []byte
	var err error
	if file == "" || file == "-" {
		file = "-"
		data, err = io.ReadAll(stdio.in)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot config check: %v\n", err)
		return exitFail
	}
	res := checkResult{File: file, Kind: *kind}
	switch *kind {
	case "auto":
		res.Kind = detectKind(data)
	case "user-data", "image":
	default:
		fmt.Fprintf(stdio.err, "spotroot config check: --kind %q: use auto, user-data or image\n", *kind)
		return exitUsage
	}
	var cfg *config.Config
	if res.Kind == "image" {
		cfg, err = config.Load(data, nil, "")
	} else {
		cfg, err = config.Load(nil, data, "")
	}
	if cfg != nil {
		res.Warnings = cfg.Warnings()
	}
	switch {
	case errors.Is(err, config.ErrNotConfigured):
		res.Errors = []string{fmt.Sprintf("%v: the instance would boot the image's own init", err)}
	case err != nil:
		res.Errors = strings.Split(err.Error(), "\n")
	default:
		res.Valid = true
		res.Config = toJSON(cfg)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stdio.err, "spotroot config check: warning: %s\n", w)
	}
	if *output == "json" {
		writeJSON(stdio.out, res)
	} else {
		for _, e := range res.Errors {
			fmt.Fprintf(stdio.err, "spotroot config check: %s\n", e)
		}
		if res.Valid {
			printConfig(stdio.out, cfg, res.Kind)
		}
	}
	if !res.Valid {
		return exitFail
	}
	return exitOK
}

// must returns the code of a parse that is done.
func must(code int, _ bool) int { return code }

// detectKind tells user-data (it has a header cloud-init knows, or is
// MIME, gzip or base64) from an image config file (plain YAML with a
// spotroot key).
func detectKind(data []byte) string {
	if _, err := config.ExtractUserData(data); !errors.Is(err, config.ErrNotConfigured) {
		return "user-data"
	}
	for _, h := range []string{"#!", "#cloud-boothook", "#include", "#part-handler", "#cloud-config-archive", "#cloud-config-jsonp"} {
		if bytes.HasPrefix(bytes.TrimSpace(data), []byte(h)) {
			return "user-data" // cloud-init's, carrying no spotroot section
		}
	}
	return "image"
}

func toJSON(cfg *config.Config) *configJSON {
	j := &configJSON{Init: cfg.Init, ImageInit: cfg.ImageInit, OnFailure: orDefault(cfg.OnFailure, "image-init"),
		CrossAZ: cfg.CrossAZ, Sources: cfg.Sources(), Volumes: []volumeJSON{}}
	for _, v := range cfg.Volumes {
		j.Volumes = append(j.Volumes, volumeJSON{Volume: v.Describe(), ID: v.ID, Tag: v.Tag, Pool: v.Pool, Mount: v.Mount,
			Partition: v.Partition, FSType: v.FSType, Create: v.Create})
	}
	t := cfg.Timeouts
	j.Timeouts = map[string]string{"network": t.Network.D().String(), "imds": t.IMDS.D().String(), "attach": t.Attach.D().String(),
		"device": t.Device.D().String(), "detach": t.Detach.D().String(), "create": t.Create.D().String()}
	return j
}

func printConfig(w io.Writer, cfg *config.Config, kind string) {
	fmt.Fprintf(w, "ok (%s): %d volume(s)\n", kind, len(cfg.Volumes))
	for _, v := range cfg.Volumes {
		fmt.Fprintf(w, "  %s → %s\n", v.Describe(), v.Mount)
	}
	fmt.Fprintf(w, "init: %s\nimage_init: %s\non_failure: %s\n", cfg.Init,
		orDefault(cfg.ImageInit, "(first of /sbin/init.real, systemd)"), orDefault(cfg.OnFailure, "image-init"))
	t := cfg.Timeouts
	fmt.Fprintf(w, "timeouts: network=%v imds=%v attach=%v device=%v\n", t.Network.D(), t.IMDS.D(), t.Attach.D(), t.Device.D())
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
