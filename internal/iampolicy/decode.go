package iampolicy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// Decoded is an authorization failure message in the format of STS's
// DecodeAuthorizationMessage
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_DecodeAuthorizationMessage.html),
// which EC2 appends, encoded, to UnauthorizedOperation.
type Decoded struct {
	Allowed           bool `json:"allowed"`
	ExplicitDeny      bool `json:"explicitDeny"`
	MatchedStatements struct {
		Items []DecodedStatement `json:"items"`
	} `json:"matchedStatements"`
	Failures struct {
		Items []DecodedStatement `json:"items"`
	} `json:"failures"`
	Context struct {
		Principal struct {
			ID  string `json:"id"`
			ARN string `json:"arn"`
		} `json:"principal"`
		Action   string `json:"action"`
		Resource string `json:"resource"`
	} `json:"context"`
}

// DecodedStatement is a statement the evaluation matched (or, in
// failures, one that named the action and resource but whose condition
// failed, with the reason).
type DecodedStatement struct {
	StatementID string `json:"statementId"`
	Effect      string `json:"effect"`
	Reason      string `json:"reason,omitempty"`
}

const encodedMarker = "Encoded authorization failure message: "

// DecodeMessage decodes the encoded part of an UnauthorizedOperation
// message. Real EC2 encrypts it (only sts:DecodeAuthorizationMessage reads
// it); the simulator base64-encodes the same JSON, which this decodes.
func DecodeMessage(msg string) (Decoded, error) {
	var d Decoded
	i := strings.Index(msg, encodedMarker)
	if i < 0 {
		return d, fmt.Errorf("no encoded authorization failure message in %q", msg)
	}
	enc := strings.TrimSpace(msg[i+len(encodedMarker):])
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		return d, fmt.Errorf("decode authorization message: %w (real EC2 messages need sts:DecodeAuthorizationMessage)", err)
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return d, fmt.Errorf("decode authorization message: %w", err)
	}
	return d, nil
}

// Statement names the statement that decided: the explicit Deny, else the
// first candidate whose condition failed ("" for none).
func (d Decoded) Statement() string {
	if len(d.MatchedStatements.Items) > 0 {
		return d.MatchedStatements.Items[0].StatementID
	}
	if len(d.Failures.Items) > 0 {
		return d.Failures.Items[0].StatementID
	}
	return ""
}
