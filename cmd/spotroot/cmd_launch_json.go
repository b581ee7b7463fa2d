package main

import (
	"bytes"
	"context"
	"regexp"

	"github.com/spotroot/spotroot/internal/ops"
)

// launchIDs finds the ids launch reports in its text (the patterns
// compile when launch runs, not at every start of PID 1, which shares this
// binary).
var launchIDs = map[string]string{
	"instance_id":             `\bi-[0-9a-f]{8,17}\b`,
	"spot_request_id":         `\bsir-[0-9a-z]+\b`,
	"launch_template_id":      `\blt-[0-9a-f]{8,17}\b`,
	"volume_id":               `\bvol-[0-9a-f]{8,17}\b`,
	"subnet_id":               `\bsubnet-[0-9a-f]{8,17}\b`,
	"image_id":                `\bami-[0-9a-f]{8,17}\b`,
	"launch_template_version": `\bversion (\d+)\b`,
}

// launchJSON runs launch and reports its result as JSON on stdout: the ids
// it names (instance, Spot request, launch template, volume, subnet, AMI)
// and its full text report. ops.Launch reports in text; the ids are read
// back from it so this stays a thin layer over whatever launch does.
func launchJSON(ctx context.Context, c ops.LaunchEC2, o ops.LaunchOpts, stdio stdio) error {
	var buf bytes.Buffer
	err := ops.Launch(ctx, c, o, &buf)
	res := map[string]any{"dry_run": o.DryRun, "report": buf.String()}
	for k, expr := range launchIDs {
		if m := regexp.MustCompile(expr).FindStringSubmatch(buf.String()); m != nil {
			res[k] = m[len(m)-1]
		}
	}
	if err != nil {
		res["error"] = err.Error()
	}
	writeJSON(stdio.out, res)
	return err
}
