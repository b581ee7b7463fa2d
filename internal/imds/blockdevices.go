package imds

import (
	"context"
	"sort"
	"strings"
)

// InstanceStoreDevices returns the device names of the instance's
// instance-store mappings (meta-data block-device-mapping/ephemeralN:
// "sdb", "xvdc"), which DescribeInstances never lists ("Instance store
// volumes are not shown in the block device mapping", EC2 User Guide,
// "Block device mappings"). An instance without any gets nil; NVMe instance
// storage on Nitro may be present without a mapping, which spotroot also
// recognises by the disk itself (blockdev.IsInstanceStore).
func (c *Client) InstanceStoreDevices(ctx context.Context) ([]string, error) {
	list, found, err := c.Get(ctx, "block-device-mapping/")
	if err != nil || !found {
		return nil, err
	}
	var out []string
	for _, key := range strings.Fields(string(list)) {
		key = strings.TrimSuffix(key, "/")
		if !strings.HasPrefix(key, "ephemeral") {
			continue
		}
		dev, found, err := c.Get(ctx, "block-device-mapping/"+key)
		if err != nil {
			return out, err
		}
		if d := strings.TrimSpace(string(dev)); found && d != "" {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out, nil
}
