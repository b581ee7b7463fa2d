package imds

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// RoleCredentials returns the instance-profile credentials provider PID 1
// signs with: the SDK's ec2rolecreds, retried within budget. On a fresh
// instance iam/security-credentials/<role> answers 404 for the first
// seconds (the role is being attached), and ec2rolecreds treats one 404 as
// final; so 404, 429, 5xx and network errors are retried with jittered
// backoff until budget is spent or ctx ends. Wrap it in
// aws.NewCredentialsCache.
func RoleCredentials(sdk *imds.Client, budget time.Duration) aws.CredentialsProvider {
	if budget <= 0 {
		budget = 20 * time.Second
	}
	return &roleCredentials{
		p:      ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = sdk }),
		sdk:    sdk,
		budget: budget,
	}
}

type roleCredentials struct {
	p      *ec2rolecreds.Provider
	sdk    *imds.Client
	budget time.Duration
}

// hasProfile reports whether IMDS shows an instance profile (iam/info);
// true when it cannot tell, so the caller keeps waiting within budget.
func (r *roleCredentials) hasProfile(ctx context.Context) bool {
	out, err := r.sdk.GetMetadata(ctx, &imds.GetMetadataInput{Path: "iam/info"})
	if err != nil {
		return status(err) != http.StatusNotFound
	}
	out.Content.Close()
	return true
}

func (r *roleCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, r.budget)
	defer cancel()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		c, err := r.p.Retrieve(ctx)
		if err == nil {
			return c, nil
		}
		switch s := status(err); {
		case s == http.StatusNotFound && !r.hasProfile(ctx):
			// No instance profile at all (iam/info is 404 too): waiting
			// will not make one appear.
			return aws.Credentials{}, err
		case s == http.StatusNotFound, s == http.StatusTooManyRequests, s >= 500, s == 0:
		default:
			return aws.Credentials{}, err
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return aws.Credentials{}, fmt.Errorf("instance-profile credentials: still unavailable after %d attempts in %v: %w", attempt, r.budget, err)
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}
