// Package imds reads the instance's identity and user-data from the EC2
// instance metadata service, IMDSv2 only: a session token is always required,
// so an instance whose metadata options disable tokens fails loudly instead of
// silently downgrading.
package imds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// DefaultEndpoint is the link-local address IMDS answers on.
const DefaultEndpoint = "http://169.254.169.254"

// Identity is what spotroot needs to know about its own instance.
type Identity struct {
	InstanceID   string `json:"instanceId"`
	Region       string `json:"region"`
	AZ           string `json:"availabilityZone"`
	ImageID      string `json:"imageId"`
	InstanceType string `json:"instanceType"`
	AccountID    string `json:"accountId"`
	PrivateIP    string `json:"privateIp"`
}

// Client wraps the SDK's IMDS client with time-bounded retries.
type Client struct {
	sdk   *imds.Client
	clock *clock
	// AttemptTimeout bounds one request so a hung connection is retried.
	AttemptTimeout time.Duration
}

// New returns an IMDSv2-only client for endpoint ("" = the real one).
func New(endpoint string, httpClient *http.Client) *Client {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	o := imds.Options{
		Endpoint:          endpoint,
		EnableFallback:    aws.FalseTernary, // never IMDSv1
		ClientEnableState: imds.ClientEnabled,
	}
	if httpClient != nil {
		o.HTTPClient = httpClient
	}
	c := &clock{}
	o.APIOptions = append(o.APIOptions, c.observe)
	return &Client{sdk: imds.New(o), clock: c, AttemptTimeout: 5 * time.Second}
}

// SDK exposes the underlying client, e.g. for ec2rolecreds.
func (c *Client) SDK() *imds.Client { return c.sdk }

// Identity reads the instance identity document.
func (c *Client) Identity(ctx context.Context) (Identity, error) {
	var id Identity
	err := c.retry(ctx, "read instance identity document", func(ctx context.Context) error {
		out, err := c.sdk.GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: "instance-identity/document"})
		if err != nil {
			return err
		}
		defer out.Content.Close()
		b, err := io.ReadAll(io.LimitReader(out.Content, 1<<20))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &id); err != nil {
			return permanent(fmt.Errorf("decode identity document: %w", err))
		}
		return nil
	})
	if err != nil {
		return Identity{}, err
	}
	if id.InstanceID == "" || id.Region == "" || id.AZ == "" {
		return id, fmt.Errorf("identity document lacks instanceId, region or availabilityZone: %+v", id)
	}
	return id, nil
}

// UserData returns the instance's user-data, or nil when it has none.
func (c *Client) UserData(ctx context.Context) ([]byte, error) {
	var ud []byte
	err := c.retry(ctx, "read user-data", func(ctx context.Context) error {
		out, err := c.sdk.GetUserData(ctx, &imds.GetUserDataInput{})
		if status(err) == http.StatusNotFound {
			ud = nil
			return nil
		}
		if err != nil {
			return err
		}
		defer out.Content.Close()
		ud, err = io.ReadAll(io.LimitReader(out.Content, 16<<20+1))
		if len(ud) > 16<<20 {
			return permanent(errors.New("user-data is larger than 16 MiB: refusing to parse it"))
		}
		return err
	})
	return ud, err
}

// Get reads a meta-data path such as "spot/instance-action"; found is false on 404.
func (c *Client) Get(ctx context.Context, path string) (body []byte, found bool, err error) {
	err = c.retry(ctx, "read meta-data/"+path, func(ctx context.Context) error {
		out, err := c.sdk.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if status(err) == http.StatusNotFound {
			found = false
			return nil
		}
		if err != nil {
			return err
		}
		defer out.Content.Close()
		body, err = io.ReadAll(io.LimitReader(out.Content, 1<<20))
		found = err == nil
		return err
	})
	return body, found, err
}

type permanentError struct{ error }

func (p permanentError) Unwrap() error { return p.error }

func permanent(err error) error { return permanentError{err} }

// retry calls fn until it succeeds, fails permanently, or ctx ends. Network
// errors and 5xx are retried with jittered backoff; 4xx are final, since IMDS
// will not change its mind (and a refused token means IMDSv2 is off).
func (c *Client) retry(ctx context.Context, op string, fn func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.AttemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		var p permanentError
		if errors.As(err, &p) {
			return fmt.Errorf("imds: %s: %w", op, p.error)
		}
		if s := status(err); s >= 400 && s < 500 && s != http.StatusTooManyRequests {
			return fmt.Errorf("imds: %s: %w", op, explain(s, err))
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return fmt.Errorf("imds: %s: no answer after %d attempts (%v): %w", op, attempt, ctx.Err(), last)
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func explain(status int, err error) error {
	switch status {
	case http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("IMDS refused the request with HTTP %d; spotroot uses IMDSv2 only: enable the metadata service with tokens (HttpEndpoint=enabled, HttpTokens=required): %w", status, err)
	case http.StatusUnauthorized:
		return fmt.Errorf("IMDS rejected the session token (HTTP 401): %w", err)
	}
	return err
}

// status returns the HTTP status of an SDK error, or 0.
func status(err error) int {
	// An interface, not *smithyhttp.ResponseError: the SDK wraps that in
	// awshttp.ResponseError, whose Unwrap skips it.
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	// The token request's failure reaches us through the SDK's unexported
	// retryableError, which does not unwrap: read the status from its text.
	if m := statusText().FindStringSubmatch(fmt.Sprint(err)); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// statusText compiles on first use: PID 1 pays for package initialisation
// on every boot, and this is an error path.
var statusText = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`StatusCode: (\d{3})`) })
