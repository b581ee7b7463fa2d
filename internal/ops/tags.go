package ops

import (
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tags spotroot puts on what it creates. The IAM policy (spotroot
// iam-policy) keys on ManagedKey, and denies changing any spotroot: key.
const (
	ManagedKey   = "spotroot:managed"
	ManagedValue = "true"
	VolumeKey    = "spotroot:volume"
	PoolKey      = "spotroot:pool"
	// BootTagKey is set by an instance on itself when its boot fell back
	// to the image's own init: failed:<phase> (internal/boot).
	BootTagKey = "spotroot:boot"
)

// VolumeTags are the tags of a persistent volume named name.
func VolumeTags(name, pool string) map[string]string {
	t := map[string]string{"Name": name, ManagedKey: ManagedValue, VolumeKey: name}
	if pool != "" {
		t[PoolKey] = pool
	}
	return t
}

func sdkTags(m map[string]string) []types.Tag {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

func tagMap(ts []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func filter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}
