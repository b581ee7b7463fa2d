package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// imdsClient is a minimal IMDSv2 client: it always uses a session token,
// refreshes it before it expires (and on a 401), and never falls back to
// IMDSv1.
type imdsClient struct {
	endpoint string
	http     *http.Client
	ttl      time.Duration
	now      func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time // refresh when now passes expires - ttl/5
	// Tokens counts the session tokens fetched (tests).
	tokens int
}

// errNotFound is IMDS's 404: the path (e.g. a notice) does not exist.
var errNotFound = errors.New("not found")

func (c *imdsClient) refreshDue(now time.Time) bool {
	return c.token == "" || !now.Before(c.expires.Add(-c.ttl/5))
}

func (c *imdsClient) getToken(ctx context.Context, force bool) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !force && !c.refreshDue(now) {
		return c.token, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.endpoint+"/latest/api/token", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(int(c.ttl/time.Second)))
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("imds: get session token from %s: %w", c.endpoint, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		hint := ""
		if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotFound {
			hint = ": IMDSv2 is required; enable the metadata service with tokens (HttpEndpoint=enabled, HttpTokens=required)"
		}
		return "", fmt.Errorf("imds: get session token from %s: HTTP %d%s", c.endpoint, resp.StatusCode, hint)
	}
	c.token = strings.TrimSpace(string(b))
	c.expires = now.Add(c.ttl)
	c.tokens++
	return c.token, nil
}

// get reads a meta-data path; errNotFound on 404.
func (c *imdsClient) get(ctx context.Context, path string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		tok, err := c.getToken(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+"/latest/"+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-aws-ec2-metadata-token", tok)
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("imds: read %s: %w", path, err)
		}
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusUnauthorized && attempt == 0:
			continue // the token expired early (IMDS restarted): get a new one
		case resp.StatusCode == http.StatusNotFound:
			return nil, errNotFound
		case resp.StatusCode != http.StatusOK:
			return nil, fmt.Errorf("imds: read %s: HTTP %d", path, resp.StatusCode)
		case rerr != nil:
			return nil, fmt.Errorf("imds: read %s: %w", path, rerr)
		}
		return b, nil
	}
}

func (c *imdsClient) tokenCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens
}
