package config

import (
	"fmt"
	"strings"
)

// applyCmdline applies spotroot.* parameters from the kernel command line:
//
//	spotroot.disable               boot the image's own init, no claim
//	spotroot.volume=vol-0123…      root volume by id
//	spotroot.volume=tag:Name=x     root volume by tag
//	spotroot.volume=pool:k=v       root volume from a pool
//	spotroot.init=/sbin/init       init on the persistent root
//	spotroot.image_init=PATH       the image's own init
//	spotroot.ec2_endpoint=URL      EC2 API endpoint override
//	spotroot.log_level=debug
//	spotroot.on_failure=poweroff   image-init | retry-then-image-init | poweroff
func (c *Config) applyCmdline(cmdline string) error {
	used := false
	for _, f := range strings.Fields(cmdline) {
		key, val, hasVal := strings.Cut(f, "=")
		name, ok := strings.CutPrefix(key, "spotroot.")
		if !ok {
			continue
		}
		used = true
		where := "kernel command line " + key
		switch name {
		case "disable":
			c.Disabled = val == "" || val == "1" || val == "true"
			continue
		}
		if !hasVal || val == "" {
			return fmt.Errorf("%s: needs a value (%s=…)", where, key)
		}
		switch name {
		case "volume":
			v, err := parseVolumeArg(val)
			if err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
			// The command line names the root; data volumes from other sources stay.
			kept := c.Volumes[:0:0]
			for _, old := range c.Volumes {
				if old.Mount != "/" {
					kept = append(kept, old)
				}
			}
			c.Volumes = append(kept, v)
		case "init":
			c.Init = val
		case "image_init":
			c.ImageInit = val
		case "ec2_endpoint":
			c.EC2Endpoint = val
		case "log_level":
			c.LogLevel = val
		case "on_failure":
			c.OnFailure = val
		default:
			return fmt.Errorf("%s: unknown parameter (known: spotroot.disable, spotroot.volume, spotroot.init, spotroot.image_init, spotroot.ec2_endpoint, spotroot.log_level, spotroot.on_failure)", where)
		}
	}
	if !used {
		return nil
	}
	c.source = append(c.source, "kernel command line")
	return c.normalize("kernel command line", nil)
}

func parseVolumeArg(val string) (Volume, error) {
	kind, rest, _ := strings.Cut(val, ":")
	switch kind {
	case "tag", "pool":
		k, v, ok := strings.Cut(rest, "=")
		if !ok || k == "" {
			return Volume{}, fmt.Errorf("%q: write %s:KEY=VALUE", val, kind)
		}
		if kind == "tag" {
			return Volume{Tag: map[string]string{k: v}, Mount: "/"}, nil
		}
		return Volume{Pool: map[string]string{k: v}, Mount: "/"}, nil
	}
	if strings.HasPrefix(val, "vol-") {
		return Volume{ID: val, Mount: "/"}, nil
	}
	return Volume{}, fmt.Errorf("%q is neither vol-…, tag:KEY=VALUE nor pool:KEY=VALUE", val)
}
