package sim

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// The audit log: every EC2 call, one JSON object per line, shaped like a
// CloudTrail management event
// (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-record-contents.html),
// in AuditPath(world file). Tests read it to assert what was (and was not)
// called; operators running spotsim read it too.

// AuditEvent is one EC2 call.
type AuditEvent struct {
	EventVersion string    `json:"eventVersion"`
	EventTime    time.Time `json:"eventTime"`
	EventSource  string    `json:"eventSource"`
	EventName    string    `json:"eventName"`
	AWSRegion    string    `json:"awsRegion"`
	SourceIP     string    `json:"sourceIPAddress"`
	UserAgent    string    `json:"userAgent,omitempty"`
	UserIdentity struct {
		Type        string `json:"type"` // AssumedRole (an instance) or IAMUser (the operator)
		ARN         string `json:"arn,omitempty"`
		AccessKeyID string `json:"accessKeyId,omitempty"`
		// SourceInstance is the instance a role session belongs to
		// (CloudTrail: sessionContext.ec2RoleDelivery / the session name).
		SourceInstance string `json:"sourceInstance,omitempty"`
	} `json:"userIdentity"`
	// RequestParameters are the Query API parameters as sent (minus
	// Action and Version).
	RequestParameters map[string]string `json:"requestParameters,omitempty"`
	// RequestTags are the tags the call sets: TagSpecifications by
	// resource type, or "" for CreateTags/DeleteTags's Tag.N.
	RequestTags map[string]map[string]string `json:"requestTags,omitempty"`
	// Resources are the ARNs the call was authorised for.
	Resources    []string `json:"resources,omitempty"`
	ErrorCode    string   `json:"errorCode,omitempty"`
	ErrorMessage string   `json:"errorMessage,omitempty"`
	RequestID    string   `json:"requestID"`
	ReadOnly     bool     `json:"readOnly"`
	DryRun       bool     `json:"dryRun,omitempty"`
	// TLSDetails is CloudTrail's tlsDetails: set when the call came over
	// TLS, absent for plain HTTP.
	TLSDetails *AuditTLS `json:"tlsDetails,omitempty"`
}

// AuditTLS is how a call's connection was secured (CloudTrail record
// contents, "tlsDetails").
type AuditTLS struct {
	TLSVersion string `json:"tlsVersion"` // "TLSv1.2", "TLSv1.3"
	// CipherSuite is Go's (IANA) name of the suite; CloudTrail writes
	// OpenSSL's names.
	CipherSuite string `json:"cipherSuite"`
	// ClientProvidedHostHeader is the Host the client asked for: the
	// endpoint's name (ec2.<region>.amazonaws.com, ec2.<region>.api.aws).
	ClientProvidedHostHeader string `json:"clientProvidedHostHeader"`
}

// auditTLS describes the connection r came over (nil: not TLS).
func auditTLS(r *http.Request) *AuditTLS {
	if r.TLS == nil {
		return nil
	}
	v := "TLSv1.3"
	switch r.TLS.Version {
	case tls.VersionTLS10:
		v = "TLSv1"
	case tls.VersionTLS11:
		v = "TLSv1.1"
	case tls.VersionTLS12:
		v = "TLSv1.2"
	}
	return &AuditTLS{TLSVersion: v, CipherSuite: tls.CipherSuiteName(r.TLS.CipherSuite), ClientProvidedHostHeader: r.Host}
}

// AuditPath is the audit log next to a world file: world.json →
// world.audit.jsonl.
func AuditPath(worldPath string) string {
	return strings.TrimSuffix(worldPath, ".json") + ".audit.jsonl"
}

// auditLog appends events to a file (and keeps them in memory for an
// in-memory world).
type auditLog struct {
	mu     sync.Mutex
	events []AuditEvent // only for worlds without a file
}

func (s *Server) audit() *auditLog { return &s.auditMem }

// AuditEvents returns the calls served so far, oldest first.
func (s *Server) AuditEvents() ([]AuditEvent, error) {
	if p := s.World.Path(); p != "" {
		return ReadAudit(AuditPath(p))
	}
	l := s.audit()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]AuditEvent(nil), l.events...), nil
}

// ReadAudit reads an audit log file (a missing file is an empty log).
func ReadAudit(path string) ([]AuditEvent, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []AuditEvent
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		var e AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// auditResponseWriter sees the status and body of the response, to record
// the error code.
type auditResponseWriter struct {
	http.ResponseWriter
	s      *Server
	r      *http.Request
	c      *call
	start  time.Time
	status int
	body   bytes.Buffer
}

func (s *Server) auditWriter(rw http.ResponseWriter, r *http.Request, c *call) *auditResponseWriter {
	c.secure = r.TLS != nil
	return &auditResponseWriter{ResponseWriter: rw, s: s, r: r, c: c, start: time.Now().UTC()}
}

func (a *auditResponseWriter) WriteHeader(code int) {
	a.status = code
	a.ResponseWriter.WriteHeader(code)
}

func (a *auditResponseWriter) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.status >= 400 && a.body.Len() < 64<<10 {
		a.body.Write(b)
	}
	return a.ResponseWriter.Write(b)
}

var (
	errCodeRE = regexp.MustCompile(`<Code>([^<]*)</Code>`)
	errMsgRE  = regexp.MustCompile(`<Message>([^<]*)</Message>`)
)

// record appends the event once the response is written.
func (a *auditResponseWriter) record() {
	s, c := a.s, a.c
	e := AuditEvent{EventVersion: "1.08", EventTime: a.start, EventSource: "ec2.amazonaws.com",
		EventName: c.action, UserAgent: a.r.UserAgent(), RequestID: c.requestID,
		ReadOnly: strings.HasPrefix(c.action, "Describe"), DryRun: c.params != nil && c.dryRun(),
		Resources: c.authorized, TLSDetails: auditTLS(a.r)}
	if host, _, err := net.SplitHostPort(a.r.RemoteAddr); err == nil {
		e.SourceIP = host
	}
	if e.EventName == "" {
		e.EventName = "(none)"
	}
	w := s.World
	w.mu.Lock()
	e.AWSRegion = w.Region
	switch {
	case c.caller.instanceID != "":
		e.UserIdentity.Type = "AssumedRole"
		if i, ok := w.Instances[c.caller.instanceID]; ok {
			e.UserIdentity.AccessKeyID = i.Credentials.AccessKeyID
		}
		e.UserIdentity.SourceInstance = c.caller.instanceID
	case c.caller.principal != "":
		e.UserIdentity.Type = "IAMUser"
		e.UserIdentity.AccessKeyID = w.Operator.AccessKeyID
	default:
		e.UserIdentity.Type = "Unknown" // authentication failed
	}
	w.mu.Unlock()
	e.UserIdentity.ARN = c.caller.principal
	if len(c.params) > 0 {
		e.RequestParameters = map[string]string{}
		for k, v := range c.params {
			if k == "Action" || k == "Version" || len(v) == 0 {
				continue
			}
			if k == "UserData" || strings.HasSuffix(k, ".UserData") {
				e.RequestParameters[k] = "<sensitiveDataRemoved>" // as CloudTrail does
				continue
			}
			e.RequestParameters[k] = v[0]
		}
		tags := c.specTags()
		if ts := c.tagList("Tag"); len(ts) > 0 {
			m := map[string]string{}
			for _, t := range ts {
				m[t.Key] = t.Value
			}
			tags[""] = m
		}
		if len(tags) > 0 {
			e.RequestTags = tags
		}
	}
	if a.status >= 400 {
		if m := errCodeRE.FindSubmatch(a.body.Bytes()); m != nil {
			e.ErrorCode = string(m[1])
		}
		if m := errMsgRE.FindSubmatch(a.body.Bytes()); m != nil {
			e.ErrorMessage = htmlUnescape(string(m[1]))
		}
	}
	sort.Strings(e.Resources)
	e.Resources = slices.Compact(e.Resources)
	l := s.audit()
	l.mu.Lock()
	defer l.mu.Unlock()
	p := w.Path()
	if p == "" {
		l.events = append(l.events, e)
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	f, err := os.OpenFile(AuditPath(p), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.log().Error("audit log", "err", err)
		return
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		s.log().Error("audit log", "err", err)
	}
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&quot;", `"`, "&#34;", `"`, "&#39;", "'", "&apos;", "'", "&amp;", "&").Replace(s)
}
