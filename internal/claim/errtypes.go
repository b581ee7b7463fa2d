package claim

import (
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// NotFoundError: no volume matches (and none may be created).
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no EBS volume has %s; create one (spotroot volume create), add create: to the configuration, or fix the user-data", e.What)
}

// OtherAZError: the volume exists, but only in another AZ.
type OtherAZError struct {
	What    string
	Volumes []types.Volume
	AZ      string
}

func (e *OtherAZError) Error() string {
	return fmt.Sprintf("volume %s (%s) is in %s, but this instance is in %s; launch in that AZ or set cross_az: move",
		e.What, ids(e.Volumes), aws.ToString(e.Volumes[0].AvailabilityZone), e.AZ)
}

// InUseError: the volume is attached to another instance.
type InUseError struct {
	Volume, Instance, State string
	Err                     error
}

func (e *InUseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "volume %s is in use", e.Volume)
	if e.Instance != "" {
		fmt.Fprintf(&b, ", %s to %s", e.State, e.Instance)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	b.WriteString("; spotroot never takes a volume from a running instance")
	return b.String()
}

func (e *InUseError) Unwrap() error { return e.Err }
