package main

import (
	"bytes"
	"context"
	"regexp"

	"github.com/spotroot/spotroot/internal/ops"
)

// launchIDs finds the ids launch reports in its text.
var launchIDs = map[string]*regexp.Regexp{
	"instance_id":             regexp.MustCompile(`\bi-[0-9a-f]{8,17}\b`),
	"spot_request_id":         regexp.MustCompile(`\bsir-[0-9a-z]+\b`),
	"launch_template_id":      regexp.MustCompile(`\blt-[0-9a-f]{8,17}\b`),
	"volume_id":               regexp.MustCompile(`\bvol-[0-9a-f]{8,17}\b`),
	"subnet_id":               regexp.MustCompile(`\bsubnet-[0-9a-f]{8,17}\b`),
	"image_id":                regexp.MustCompile(`\bami-[0-9a-f]{8,17}\b`),
	"launch_template_version": regexp.MustCompile(`\bversion (\d+)\b`),
}

// launchJSON runs launch and reports its result as JSON on stdout: the ids
// it names (instance, Spot request, launch template, volume, subnet, AMI)
// and its full text report. ops.Launch reports in text; the ids are read
// back from it so this stays a thin layer over whatever launch does.
func launchJSON(ctx context.Context, c ops.EC2, o ops.LaunchOpts, stdio stdio) error {
	var buf bytes.Buffer
	err := ops.Launch(ctx, c, o, &buf)
	res := map[string]any{"dry_run": o.DryRun, "report": buf.String()}
	for k, re := range launchIDs {
		if m := re.FindStringSubmatch(buf.String()); m != nil {
			res[k] = m[len(m)-1]
		}
	}
	if err != nil {
		res["error"] = err.Error()
	}
	writeJSON(stdio.out, res)
	return err
}
