package claim

import (
	"context"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// minSkewToCorrect: below this EC2 accepts the signature anyway (it refuses
// beyond five minutes) and a Date header's one-second grain is noise.
const minSkewToCorrect = time.Minute

// skewSigner signs with EC2's clock when the instance's own is off and the
// SDK has not measured that yet. The SDK corrects skew only from an EC2
// answer's Date header, i.e. after a request it signed with the wrong
// clock was refused (RequestExpired, SignatureDoesNotMatch): one wasted
// request per client, which a thousand instances booting together spend
// from the account's shared throttling bucket. The metadata service's Date
// (imds.Client.ClockOffset) tells the same thing before the first call.
type skewSigner struct {
	v4     ec2.HTTPSignerV4
	offset func() (time.Duration, bool)
}

func (s skewSigner) SignHTTP(ctx context.Context, credentials aws.Credentials, r *http.Request, payloadHash, service, region string, signingTime time.Time, optFns ...func(*v4.SignerOptions)) error {
	if off, ok := s.offset(); ok && (off >= minSkewToCorrect || off <= -minSkewToCorrect) {
		// signingTime is now plus the skew the SDK has measured; once it
		// has one (an EC2 answer came back), it is the authority.
		if sdk := time.Until(signingTime); sdk < time.Second && sdk > -time.Second {
			signingTime = signingTime.Add(off)
		}
	}
	return s.v4.SignHTTP(ctx, credentials, r, payloadHash, service, region, signingTime, optFns...)
}
