package sim

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// IAM policy evaluation, as AWS documents it:
//   - https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html
//     (an explicit Deny wins over any Allow; without an Allow the request is
//     implicitly denied);
//   - https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
//     (operators; several keys in one operator and several operators are
//     ANDed, several values for one key are ORed; a key absent from the
//     request fails a condition, except for the negated operators, Null
//     and ...IfExists);
//   - https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-single-vs-multi-valued-context-keys.html
//     (ForAllValues is true for an absent key or when every value matches;
//     ForAnyValue needs at least one matching value);
//   - https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html
//     (${key} in Resource and condition values; a variable whose key is
//     absent makes that element not match).
// EC2 authorises every resource a call names (AttachVolume: the volume and
// the instance) and each must be allowed: "Actions, resources, and
// condition keys for Amazon EC2",
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html.

// PolicyDocument is an IAM policy as JSON (Statement may be one object,
// Action/Resource one string).
type PolicyDocument struct {
	Version   string
	Statement []PolicyStatement
}

// PolicyStatement is one statement.
type PolicyStatement struct {
	Sid         string
	Effect      string
	Action      stringList
	NotAction   stringList
	Resource    stringList
	NotResource stringList
	Condition   map[string]map[string]stringList
}

// stringList reads a JSON string or array of strings (and booleans or
// numbers, which IAM accepts in conditions).
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one any
	if err := json.Unmarshal(b, &one); err != nil {
		return err
	}
	conv := func(v any) (string, error) {
		switch x := v.(type) {
		case string:
			return x, nil
		case bool, float64:
			return fmt.Sprint(x), nil
		}
		return "", fmt.Errorf("policy value %v is not a string", v)
	}
	switch x := one.(type) {
	case []any:
		for _, v := range x {
			s, err := conv(v)
			if err != nil {
				return err
			}
			*l = append(*l, s)
		}
	default:
		s, err := conv(x)
		if err != nil {
			return err
		}
		*l = stringList{s}
	}
	return nil
}

func (d *PolicyDocument) UnmarshalJSON(b []byte) error {
	var raw struct {
		Version   string
		Statement json.RawMessage
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	d.Version = raw.Version
	if len(raw.Statement) > 0 && raw.Statement[0] == '{' {
		var s PolicyStatement
		if err := json.Unmarshal(raw.Statement, &s); err != nil {
			return err
		}
		d.Statement = []PolicyStatement{s}
		return nil
	}
	return json.Unmarshal(raw.Statement, &d.Statement)
}

// ParsePolicy parses and checks a policy document.
func ParsePolicy(doc string) (*PolicyDocument, error) {
	var p PolicyDocument
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		return nil, fmt.Errorf("MalformedPolicyDocument: %w", err)
	}
	if p.Version != "2012-10-17" {
		return nil, fmt.Errorf("MalformedPolicyDocument: Version %q (policy variables need 2012-10-17)", p.Version)
	}
	for i, s := range p.Statement {
		if s.Effect != "Allow" && s.Effect != "Deny" {
			return nil, fmt.Errorf("MalformedPolicyDocument: statement %d: Effect %q", i, s.Effect)
		}
		if (len(s.Action) == 0) == (len(s.NotAction) == 0) || (len(s.Resource) == 0) == (len(s.NotResource) == 0) {
			return nil, fmt.Errorf("MalformedPolicyDocument: statement %d (%s) needs exactly one of Action/NotAction and of Resource/NotResource", i, s.Sid)
		}
		for op := range s.Condition {
			if _, _, _, err := parseOperator(op); err != nil {
				return nil, fmt.Errorf("MalformedPolicyDocument: statement %d (%s): %w", i, s.Sid, err)
			}
		}
	}
	return &p, nil
}

// authzResource is one resource a call authorises, with its condition keys
// (aws:ResourceTag/…, ec2:VolumeType, …).
type authzResource struct {
	ARN  string
	Keys map[string][]string
}

// authzRequest is one authorisation: the action ("ec2:AttachVolume"),
// request-wide keys, and the resources.
type authzRequest struct {
	Action    string
	Context   map[string][]string
	Resources []authzResource
}

// authzDecision is the outcome for a whole request.
type authzDecision struct {
	Allowed      bool
	ExplicitDeny bool
	Resource     string // the first resource not allowed
	Statement    string // the Deny that matched, or a candidate that failed
	Reason       string // why the candidate failed
}

// evaluate decides req under p: every resource must be allowed, and no
// Deny may match any of them.
func (p *PolicyDocument) evaluate(req authzRequest) authzDecision {
	var firstFail *authzDecision
	for _, r := range req.Resources {
		ctx := map[string][]string{}
		for k, v := range req.Context {
			ctx[strings.ToLower(k)] = v
		}
		for k, v := range r.Keys {
			ctx[strings.ToLower(k)] = v
		}
		allowed := false
		var candidate, reason string
		for _, s := range p.Statement {
			if !s.matchesAction(req.Action) || !s.matchesResource(r.ARN, ctx) {
				continue
			}
			ok, why := s.conditionsHold(ctx)
			if !ok {
				if candidate == "" && s.Effect == "Allow" {
					candidate, reason = s.Sid, why
				}
				continue
			}
			if s.Effect == "Deny" {
				return authzDecision{ExplicitDeny: true, Resource: r.ARN, Statement: s.Sid}
			}
			allowed = true
		}
		if !allowed && firstFail == nil {
			firstFail = &authzDecision{Resource: r.ARN, Statement: candidate, Reason: reason}
		}
	}
	if firstFail != nil {
		return *firstFail
	}
	return authzDecision{Allowed: true}
}

func (s PolicyStatement) matchesAction(action string) bool {
	match := func(l []string) bool {
		for _, a := range l {
			if globMatch(strings.ToLower(a), strings.ToLower(action)) {
				return true
			}
		}
		return false
	}
	if len(s.NotAction) > 0 {
		return !match(s.NotAction)
	}
	return match(s.Action)
}

func (s PolicyStatement) matchesResource(arn string, ctx map[string][]string) bool {
	match := func(l []string) bool {
		for _, pat := range l {
			if p, ok := substitute(pat, ctx, true); ok && globMatch(p, arn) {
				return true
			}
		}
		return false
	}
	if len(s.NotResource) > 0 {
		return !match(s.NotResource)
	}
	return match(s.Resource)
}

// conditionsHold evaluates the Condition block; on failure it says which
// operator and key failed.
func (s PolicyStatement) conditionsHold(ctx map[string][]string) (bool, string) {
	for opName, keys := range s.Condition {
		set, op, ifExists, _ := parseOperator(opName)
		for key, want := range keys {
			got, present := ctx[strings.ToLower(key)]
			if !conditionHolds(set, op, ifExists, got, present, want, ctx) {
				if !present {
					return false, fmt.Sprintf("%s %s: the request has no %s", opName, key, key)
				}
				return false, fmt.Sprintf("%s %s: %v is not %v", opName, key, got, []string(want))
			}
		}
	}
	return true, ""
}

type condOp struct {
	name    string
	negated bool
	match   func(pattern, value string) bool
}

func parseOperator(name string) (set string, op condOp, ifExists bool, err error) {
	base := name
	if p, rest, ok := strings.Cut(base, ":"); ok {
		if p != "ForAllValues" && p != "ForAnyValue" {
			return "", op, false, fmt.Errorf("condition operator %q: unknown set operator %q", name, p)
		}
		set, base = p, rest
	}
	base, ifExists = strings.CutSuffix(base, "IfExists")
	eq := func(a, b string) bool { return a == b }
	fold := strings.EqualFold
	like := func(p, v string) bool { return globMatch(p, v) }
	switch base {
	case "StringEquals", "ArnEquals", "BinaryEquals":
		op = condOp{base, false, eq}
	case "StringNotEquals", "ArnNotEquals":
		op = condOp{base, true, eq}
	case "StringEqualsIgnoreCase":
		op = condOp{base, false, fold}
	case "StringNotEqualsIgnoreCase":
		op = condOp{base, true, fold}
	case "StringLike", "ArnLike":
		op = condOp{base, false, like}
	case "StringNotLike", "ArnNotLike":
		op = condOp{base, true, like}
	case "Bool":
		op = condOp{base, false, fold}
	case "NumericEquals":
		op = condOp{base, false, eq}
	case "NumericNotEquals":
		op = condOp{base, true, eq}
	case "Null":
		if ifExists {
			return "", op, false, fmt.Errorf("condition operator %q: Null has no IfExists form", name)
		}
		op = condOp{name: "Null"}
	default:
		return "", op, false, fmt.Errorf("condition operator %q is not supported by the simulator", name)
	}
	return set, op, ifExists, nil
}

func conditionHolds(set string, op condOp, ifExists bool, got []string, present bool, want stringList, ctx map[string][]string) bool {
	if op.name == "Null" {
		for _, w := range want {
			if strings.EqualFold(w, "true") == !present {
				return true
			}
		}
		return false
	}
	// One request value against the policy's values: positive operators
	// need any value to match, negated ones that none does.
	one := func(v string) bool {
		for _, w := range want {
			p, ok := substitute(w, ctx, op.name == "StringLike" || op.name == "ArnLike" || op.name == "StringNotLike" || op.name == "ArnNotLike")
			if ok && op.match(p, v) {
				return !op.negated
			}
		}
		return op.negated
	}
	switch set {
	case "ForAllValues":
		for _, v := range got {
			if !one(v) {
				return false
			}
		}
		return true
	case "ForAnyValue":
		return slices.ContainsFunc(got, one)
	}
	if !present {
		return ifExists || op.negated
	}
	if op.negated {
		// A multivalued key under a negated operator without a set
		// qualifier: true only if no value matches.
		for _, v := range got {
			if !one(v) {
				return false
			}
		}
		return true
	}
	return slices.ContainsFunc(got, one)
}

// substitute replaces ${key} (and the escapes ${*}, ${?}, ${$}) with the
// single value of key in ctx; ok is false when a key is absent or
// multivalued. In patterns (like), the values are escaped so a value
// never acts as a wildcard.
func substitute(s string, ctx map[string][]string, like bool) (string, bool) {
	if !strings.Contains(s, "${") {
		return s, true
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String(), true
		}
		b.WriteString(s[:i])
		name := s[i+2 : i+j]
		s = s[i+j+1:]
		switch name {
		case "*", "?", "$":
			if like && name != "$" {
				b.WriteString(`\` + name)
			} else {
				b.WriteString(name)
			}
			continue
		}
		v, ok := ctx[strings.ToLower(name)]
		if !ok || len(v) != 1 {
			return "", false
		}
		if like {
			b.WriteString(strings.NewReplacer("*", `\*`, "?", `\?`).Replace(v[0]))
		} else {
			b.WriteString(v[0])
		}
	}
}

// globMatch matches IAM wildcards: * any run of characters (also across
// ':' and '/'), ? one character; \* and \? are literal.
func globMatch(pattern, s string) bool {
	// path.Match stops * at '/', so translate '/' away first.
	const slash = "\x00"
	p := strings.ReplaceAll(pattern, "/", slash)
	v := strings.ReplaceAll(s, "/", slash)
	p = strings.NewReplacer("[", `\[`, "]", `\]`).Replace(p)
	ok, err := path.Match(p, v)
	return err == nil && ok
}

// unauthorizedFor builds UnauthorizedOperation as EC2 words it, with the
// decision encoded in the format of STS DecodeAuthorizationMessage. Real
// EC2 encrypts it; the simulator base64url-encodes the JSON
// (iampolicy.DecodeMessage reads it).
func unauthorizedFor(action, principal string, d authzDecision) *APIError {
	type stmt struct {
		StatementID string `json:"statementId"`
		Effect      string `json:"effect"`
		Reason      string `json:"reason,omitempty"`
	}
	doc := map[string]any{
		"allowed":           false,
		"explicitDeny":      d.ExplicitDeny,
		"matchedStatements": map[string]any{"items": []stmt{}},
		"failures":          map[string]any{"items": []stmt{}},
		"context": map[string]any{
			"principal": map[string]string{"arn": principal},
			"action":    action,
			"resource":  d.Resource,
		},
	}
	why := fmt.Sprintf("because no identity-based policy allows the %s action", action)
	switch {
	case d.ExplicitDeny:
		doc["matchedStatements"] = map[string]any{"items": []stmt{{StatementID: d.Statement, Effect: "DENY"}}}
		why = "with an explicit deny in an identity-based policy"
	case d.Statement != "":
		doc["failures"] = map[string]any{"items": []stmt{{StatementID: d.Statement, Effect: "ALLOW", Reason: d.Reason}}}
	}
	raw, _ := json.Marshal(doc)
	on := ""
	if d.Resource != "" && d.Resource != "*" {
		on = " on resource: " + d.Resource
	}
	msg := fmt.Sprintf("You are not authorized to perform this operation. User: %s is not authorized to perform: %s%s %s. Encoded authorization failure message: %s",
		principal, action, on, why, base64.RawURLEncoding.EncodeToString(raw))
	return newError("UnauthorizedOperation", msg)
}
