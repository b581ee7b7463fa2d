package sim

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// caller is who made an EC2 call: an instance through its role
// credentials, or the operator key.
type caller struct {
	instanceID string // empty for the operator
	principal  string // ARN, for UnauthorizedOperation messages
}

func (c caller) name() string {
	if c.instanceID == "" {
		return "operator"
	}
	return c.instanceID
}

// sigV4Auth is a parsed "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
// Signature=..." header.
type sigV4Auth struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        string
}

func parseSigV4(h string) (sigV4Auth, error) {
	var a sigV4Auth
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return a, fmt.Errorf("not AWS4-HMAC-SHA256")
	}
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return a, fmt.Errorf("malformed credential %q", v)
			}
			a.accessKey, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	if a.accessKey == "" || len(a.signedHeaders) == 0 || a.signature == "" {
		return a, fmt.Errorf("incomplete authorization header")
	}
	return a, nil
}

// authenticate finds the caller by the access key in the credential scope
// and checks region, service, session token and signature.
func (s *Server) authenticate(r *http.Request, body []byte) (caller, error) {
	authFailure := func(msg string) error { return newError("AuthFailure", msg) }
	h := r.Header.Get("Authorization")
	if h == "" {
		return caller{}, authFailure("")
	}
	a, err := parseSigV4(h)
	if err != nil {
		return caller{}, newError("IncompleteSignature", fmt.Sprintf("Authorization header: %v", err))
	}

	w := s.World
	w.mu.Lock()
	region, account := w.Region, w.AccountID
	var who caller
	var creds Credentials
	if w.Operator.AccessKeyID == a.accessKey {
		creds = w.Operator
		who.principal = fmt.Sprintf("arn:aws:iam::%s:user/operator", account)
	} else {
		now := time.Now()
	find:
		for _, i := range w.Instances {
			if i.Role == "" {
				continue
			}
			w.rotateCredentialsLocked(i, now)
			for _, k := range append([]Credentials{i.Credentials}, i.OldCredentials...) {
				if k.AccessKeyID == a.accessKey {
					creds, who.instanceID = k, i.ID
					who.principal = fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", account, i.Role, i.ID)
					break find
				}
			}
		}
	}
	w.mu.Unlock()
	if !creds.Expires.IsZero() && time.Now().After(creds.Expires) {
		return caller{}, authFailure("The security token included in the request is expired.")
	}

	if creds.AccessKeyID == "" {
		return caller{}, authFailure("")
	}
	if a.region != region {
		return caller{}, authFailure("Credential should be scoped to a valid region. ")
	}
	if a.service != "ec2" {
		return caller{}, authFailure("Credential should be scoped to correct service: 'ec2'. ")
	}
	if r.Header.Get("X-Amz-Security-Token") != creds.Token {
		return caller{}, authFailure("The security token included in the request is invalid.")
	}
	if !s.SkipSignatureCheck {
		if err := verifySigV4(r, body, a, creds); err != nil {
			return caller{}, err
		}
	}
	return who, nil
}

// verifySigV4 re-signs a copy of the request carrying only the headers the
// client signed, with the SDK's own signer, and compares signatures.
func verifySigV4(r *http.Request, body []byte, a sigV4Auth, creds Credentials) error {
	mismatch := newError("SignatureDoesNotMatch",
		"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	t, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return newError("IncompleteSignature", "missing or malformed X-Amz-Date")
	}
	if t.Format("20060102") != a.date {
		return mismatch
	}
	u := *r.URL
	u.Scheme, u.Host = "http", r.Host
	req, err := http.NewRequest(r.Method, u.String(), nil)
	if err != nil {
		return mismatch
	}
	req.Host = r.Host
	for _, name := range a.signedHeaders {
		switch name {
		case "host":
		case "content-length":
			req.ContentLength = r.ContentLength
		default:
			req.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
		}
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		SessionToken:    creds.Token,
	}, req, hex.EncodeToString(sum[:]), a.service, a.region, t)
	if err != nil {
		return mismatch
	}
	got, err := parseSigV4(req.Header.Get("Authorization"))
	if err != nil || !hmac.Equal([]byte(got.signature), []byte(a.signature)) {
		return mismatch
	}
	return nil
}
