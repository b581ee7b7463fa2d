package imds

import (
	"context"
	"sort"
	"strings"
)

// Mappings are the instance's block-device mappings as IMDS lists them
// (meta-data block-device-mapping/: ami, root, ebsN, ephemeralN), that is
// as they were at launch ("Amazon EBS volumes are only available in
// metadata if they were present at launch time or when the instance was
// last started", EC2 User Guide, "Instance metadata categories").
type Mappings struct {
	Devices        []string // every mapped device name ("xvda", "sdb", "/dev/sdf"), sorted
	InstanceStores []string // those of ephemeralN entries, sorted
}

// BlockDeviceMappings reads the instance's mappings; an instance without
// the category gets empty Mappings.
func (c *Client) BlockDeviceMappings(ctx context.Context) (Mappings, error) {
	var m Mappings
	list, found, err := c.Get(ctx, "block-device-mapping/")
	if err != nil || !found {
		return m, err
	}
	for _, key := range strings.Fields(string(list)) {
		key = strings.TrimSuffix(key, "/")
		dev, found, err := c.Get(ctx, "block-device-mapping/"+key)
		if err != nil {
			return m, err
		}
		d := strings.TrimSpace(string(dev))
		if !found || d == "" {
			continue
		}
		m.Devices = append(m.Devices, d)
		if strings.HasPrefix(key, "ephemeral") {
			m.InstanceStores = append(m.InstanceStores, d)
		}
	}
	sort.Strings(m.Devices)
	sort.Strings(m.InstanceStores)
	return m, nil
}
