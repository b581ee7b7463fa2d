//go:build !pid1

package main

import (
	"context"

	"github.com/spotroot/spotroot/internal/ops"
)

func launch(ctx context.Context, a *ops.AWSFlags, o ops.LaunchOpts, stdio stdio, asJSON bool) error {
	c, _, err := a.Client(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return launchJSON(ctx, c, o, stdio)
	}
	return ops.Launch(ctx, c, o, stdio.out)
}
