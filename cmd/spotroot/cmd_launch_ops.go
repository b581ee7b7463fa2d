//go:build !pid1

package main

import (
	"context"
	"io"

	"github.com/spotroot/spotroot/internal/ops"
)

func launch(ctx context.Context, a *ops.AWSFlags, o ops.LaunchOpts, out io.Writer) error {
	c, _, err := a.Client(ctx)
	if err != nil {
		return err
	}
	return ops.Launch(ctx, c, o, out)
}
