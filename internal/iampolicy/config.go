package iampolicy

import (
	"strings"

	"github.com/spotroot/spotroot/internal/config"
)

// ForConfig returns the capabilities the boot path needs for c: create when
// a volume has create: (its selector becomes a required request tag),
// cross-AZ move for volumes named by id or tag unless cross_az: fail (move
// is the default; pools only claim members in their own zone), detach from
// a dead owner with force_detach, delete moved with delete_moved, claim
// tags for pools with tag_claims. Partition, tag and KMS keys are left to the caller.
func ForConfig(c *config.Config) Options {
	var o Options
	moves := false // only a volume named by id or tag is moved: pools claim in their zone
	for _, v := range c.Volumes {
		if len(v.Pool) > 0 {
			o.ClaimTags = c.TagClaims
		} else {
			moves = true
		}
		if v.Create == nil {
			continue
		}
		o.Create = true
		from := v.Create.From
		if from == "" {
			from = "ami"
		}
		if !contains(o.CreateFrom, from) {
			o.CreateFrom = append(o.CreateFrom, from)
		}
		sel := v.Tag
		if len(sel) == 0 {
			sel = v.Pool
		}
		// Several created volumes with different selectors: only the
		// keys and values they share can be required.
		if o.CreateTags == nil {
			o.CreateTags = map[string]string{}
			for k, val := range sel {
				o.CreateTags[k] = val
			}
		} else {
			for k, val := range o.CreateTags {
				if sel[k] != val {
					delete(o.CreateTags, k)
				}
			}
		}
	}
	for k := range o.CreateTags {
		if strings.HasPrefix(k, "aws:") {
			delete(o.CreateTags, k)
		}
	}
	o.CrossAZMove = moves && c.CrossAZ != "fail"
	o.DetachDeadOwner = c.ForceDetach
	o.DeleteMoved = c.DeleteMoved && o.CrossAZMove
	return o
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
