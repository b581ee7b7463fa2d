package imds

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// clock keeps what IMDS's Date headers say of the local clock. IMDS answers
// from the instance's host with a Date header (AWS's IMDSv2 examples show
// "Server: EC2ws" and "Date: …" on every answer), the same clock EC2 checks
// signatures against: an instance whose clock is minutes off learns so from
// its first metadata read, before its first signed call is refused.
type clock struct {
	offset atomic.Int64 // nanoseconds, host clock minus ours
	known  atomic.Bool
}

// observe is a deserialize step: it reads the Date of every IMDS answer.
func (c *clock) observe(s *middleware.Stack) error {
	return s.Deserialize.Add(middleware.DeserializeMiddlewareFunc("spotrootClock",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			sent := time.Now()
			out, md, err := next.HandleDeserialize(ctx, in)
			if r, ok := out.RawResponse.(*smithyhttp.Response); ok && r != nil {
				if d, perr := http.ParseTime(r.Header.Get("Date")); perr == nil {
					// Date has whole seconds: take the middle of the
					// exchange and accept up to a second of error.
					local := sent.Add(time.Since(sent) / 2)
					c.offset.Store(int64(d.Add(500 * time.Millisecond).Sub(local)))
					c.known.Store(true)
				}
			}
			return out, md, err
		}), middleware.After)
}

// ClockOffset is the metadata host's clock minus this machine's, from the
// last IMDS answer that carried a Date header (ok false before any did).
// It is good to about a second.
func (c *Client) ClockOffset() (time.Duration, bool) {
	if c == nil || c.clock == nil || !c.clock.known.Load() {
		return 0, false
	}
	return time.Duration(c.clock.offset.Load()), true
}
