package sim

import (
	"net/url"
	"slices"
	"strings"
)

// ClientTokenUse remembers what a ClientToken created. EC2: "If you repeat
// the request with the same client token, but change another request
// parameter, Amazon EC2 returns an IdempotentParameterMismatch error";
// a repeat with the same parameters returns the original resource, whatever
// its state is now
// (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).
// Tokens live "at least 24 hours"; the simulator keeps them forever.
type ClientTokenUse struct {
	Action     string
	Params     string // the request's other parameters, canonical
	ResourceID string
}

// requestFingerprint is the request's parameters without the token and the
// protocol fields, in a canonical order.
func requestFingerprint(p url.Values) string {
	var parts []string
	for k, vs := range p {
		switch k {
		case "ClientToken", "Action", "Version":
			continue
		}
		for _, v := range vs {
			parts = append(parts, k+"="+v)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "&")
}

// clientTokenLocked looks the call's ClientToken up: the resource it made
// before, or a mismatch error; "" when the call is new.
func (w *World) clientTokenLocked(c *call) (string, *APIError) {
	tok := c.str("ClientToken")
	if tok == "" {
		return "", nil
	}
	if len(tok) > 64 {
		return "", errInvalidParam("Value (%s) for parameter clientToken is invalid. It must be at most 64 ASCII characters.", tok)
	}
	u, ok := w.ClientTokens[tok]
	if !ok {
		return "", nil
	}
	if u.Action != c.action || u.Params != requestFingerprint(c.params) {
		return "", errf("IdempotentParameterMismatch", "The client token %s was already used with different parameters.", tok)
	}
	return u.ResourceID, nil
}

// rememberClientTokenLocked records what the call's ClientToken created.
func (w *World) rememberClientTokenLocked(c *call, resourceID string) {
	tok := c.str("ClientToken")
	if tok == "" {
		return
	}
	if w.ClientTokens == nil {
		w.ClientTokens = map[string]ClientTokenUse{}
	}
	w.ClientTokens[tok] = ClientTokenUse{Action: c.action, Params: requestFingerprint(c.params), ResourceID: resourceID}
}
