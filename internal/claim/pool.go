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
	// Ask EC2 for just what each step needs: with many claimants the pool
	// listing is the bulk of the traffic, and most members are taken.
	list := func(what string, extra ...types.Filter) ([]types.Volume, error) {
		f := append(tagFilters(v.Pool), types.Filter{Name: aws.String("availability-zone"), Values: []string{c.Instance.AZ}})
		return c.describe(ctx, &ec2.DescribeVolumesInput{Filters: append(f, extra...)}, what+" "+v.Describe())
	}
	// A member attached to us already: a reboot of this instance.
	mine, err := list("find my member of", types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{c.Instance.ID}})
	if err != nil {
		return Claim{}, err
	}
	if len(mine) > 0 {
		return c.Attach(ctx, mine[0])
	}
	freeMembers := func() ([]types.Volume, error) {
		avail, err := list("list free members of", types.Filter{Name: aws.String("status"), Values: []string{"available"}})
		if err != nil {
			return nil, err
		}
		var free []types.Volume
		for _, vol := range avail {
			if tagValue(vol, TagMovedTo) == "" && !aws.ToBool(vol.MultiAttachEnabled) && len(vol.Attachments) == 0 {
				free = append(free, vol)
			}
		}
		return free, nil
	}
	free, err := freeMembers()
	if err != nil {
		return Claim{}, err
	}
	// AttachVolume is not idempotent: a call whose answer was lost may
	// have succeeded, and the SDK's retry then reports VolumeInUse or the
	// device as taken (Attach looks at the volume itself then). Whenever an
	// attempt fails otherwise, look for a member that is in fact ours
	// before trying another.
	ours := func() (Claim, bool) {
		mine, err := list("find my member of", types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{c.Instance.ID}})
		if err != nil || len(mine) == 0 {
			return Claim{}, false
		}
		cl, err := c.Attach(ctx, mine[0])
		return cl, err == nil
	}
	// After a lost race the list is refreshed before the next attempt:
	// AttachVolume has the smaller throttling bucket (50, 5/s) than a
	// filtered DescribeVolumes (100, 20/s), and with many claimants most
	// members of a minutes-old list are taken.
	tried := map[string]bool{}
	for {
		var next *types.Volume
		for _, vol := range RendezvousOrder(c.Instance.ID, free) {
			if !tried[aws.ToString(vol.VolumeId)] {
				next = &vol
				break
			}
		}
		if next == nil {
			break
		}
		vol := *next
		tried[aws.ToString(vol.VolumeId)] = true
		cl, err := c.Attach(ctx, vol)
		var inUse *InUseError
		if err != nil && !errors.As(err, &inUse) {
			if cl, ok := ours(); ok {
				c.tagClaimed(ctx, cl.VolumeID)
				return cl, nil
			}
			return Claim{}, err
		}
		if err == nil {
			c.tagClaimed(ctx, cl.VolumeID)
			return cl, nil
		}
		c.log().Info("pool member taken by another instance, trying the next", "volume", aws.ToString(vol.VolumeId))
		if free, err = freeMembers(); err != nil {
			return Claim{}, err
		}
	}
	if cl, ok := ours(); ok {
		c.tagClaimed(ctx, cl.VolumeID)
		return cl, nil
	}
	// Members held by dead instances come free soon (or by force).
	vols, err := list("list")
	if err != nil {
		return Claim{}, err
	}
	var busy []types.Volume
	for _, vol := range vols {
		if len(vol.Attachments) > 0 && tagValue(vol, TagMovedTo) == "" && !aws.ToBool(vol.MultiAttachEnabled) {
			busy = append(busy, vol)
		}
	}
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
		v.Describe(), c.Instance.AZ, len(vols), len(tried)+len(busy))
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
