package claim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/spotroot/spotroot/internal/config"
)

// claimPool takes any available volume of the pool in this AZ. Claimants
// try the members in an order derived from their own instance id
// (rendezvous hashing), so simultaneous claimants mostly try different
// volumes first; EC2's AttachVolume is atomic, and a lost race
// (VolumeInUse/IncorrectState) moves on to the next member.
func (c *Claimer) claimPool(ctx context.Context, v config.Volume) (Claim, error) {
	in := &ec2.DescribeVolumesInput{Filters: append(tagFilters(v.Pool),
		types.Filter{Name: aws.String("availability-zone"), Values: []string{c.Instance.AZ}})}
	vols, err := c.describe(ctx, in, "list "+v.Describe())
	if err != nil {
		return Claim{}, err
	}
	// A member attached to us already: a reboot of this instance.
	for _, vol := range vols {
		if attachedTo(vol, c.Instance.ID) != nil {
			return c.Attach(ctx, vol)
		}
	}
	var free, busy []types.Volume
	for _, vol := range vols {
		switch {
		case tagValue(vol, TagMovedTo) != "" || aws.ToBool(vol.MultiAttachEnabled):
		case vol.State == types.VolumeStateAvailable && len(vol.Attachments) == 0:
			free = append(free, vol)
		default:
			busy = append(busy, vol)
		}
	}
	order := RendezvousOrder(c.Instance.ID, free)
	for _, vol := range order {
		cl, err := c.Attach(ctx, vol)
		var inUse *InUseError
		if errors.As(err, &inUse) {
			c.log().Info("pool member taken by another instance, trying the next", "volume", aws.ToString(vol.VolumeId))
			continue
		}
		if err != nil {
			return Claim{}, err
		}
		c.tagClaimed(ctx, cl.VolumeID)
		return cl, nil
	}
	// Members held by dead instances come free soon (or by force).
	for i := range busy {
		vol := busy[i]
		if err := c.freeFromDeadInstance(ctx, &vol); err != nil {
			continue
		}
		cl, err := c.Attach(ctx, vol)
		if err == nil {
			c.tagClaimed(ctx, cl.VolumeID)
			return cl, nil
		}
	}
	if v.Create != nil {
		return c.createAndAttach(ctx, v, v.Pool)
	}
	return Claim{}, fmt.Errorf("pool %s is exhausted in %s: %d member(s), %d tried, none free; add volumes to the pool or add create: to the configuration",
		v.Describe(), c.Instance.AZ, len(vols), len(order)+len(busy))
}

// RendezvousOrder orders volumes by a hash of (instance id, volume id):
// stable for one instance, independent across instances.
func RendezvousOrder(instanceID string, vols []types.Volume) []types.Volume {
	type scored struct {
		v     types.Volume
		score uint64
	}
	s := make([]scored, len(vols))
	for i, v := range vols {
		h := fnv.New64a()
		h.Write([]byte(instanceID))
		h.Write([]byte{0})
		h.Write([]byte(aws.ToString(v.VolumeId)))
		s[i] = scored{v, h.Sum64()}
	}
	sort.Slice(s, func(i, j int) bool { return s[i].score > s[j].score })
	out := make([]types.Volume, len(s))
	for i := range s {
		out[i] = s[i].v
	}
	return out
}
