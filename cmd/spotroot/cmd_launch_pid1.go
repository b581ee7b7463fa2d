//go:build pid1

package main

import (
	"context"

	"github.com/spotroot/spotroot/internal/ops"
)

// launch is not in the boot-agent build: linking RunInstances and the
// launch template calls would add their serializers to PID 1.
func launch(context.Context, *ops.AWSFlags, ops.LaunchOpts, stdio, bool) error {
	return ops.ErrPID1Build
}
