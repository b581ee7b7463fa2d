package sim

import (
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ec2Action implements one EC2 action. It runs with World.mu held and
// returns the response payload (see xml.go) or an EC2 error.
type ec2Action struct {
	fn func(s *Server, c *call) (response, *APIError)
	// mutates makes the dispatcher save the world after a success.
	mutates bool
}

// ec2Actions lists every implemented action: adding one is adding a line
// here and its function.
var ec2Actions = map[string]ec2Action{
	"DescribeVolumes":   {(*Server).describeVolumes, false},
	"AttachVolume":      {(*Server).attachVolume, true},
	"DetachVolume":      {(*Server).detachVolume, true},
	"CreateVolume":      {(*Server).createVolume, true},
	"DeleteVolume":      {(*Server).deleteVolume, true},
	"DescribeInstances": {(*Server).describeInstances, false},
	"CreateTags":        {(*Server).createTags, true},
	"DeleteTags":        {(*Server).deleteTags, true},
	"CreateSnapshot":    {(*Server).createSnapshot, true},
	"DescribeSnapshots": {(*Server).describeSnapshots, false},
	"DeleteSnapshot":    {(*Server).deleteSnapshot, true},
	"DescribeImages":    {(*Server).describeImages, false},

	"DescribeSubnets":              {(*Server).describeSubnets, false},
	"RequestSpotInstances":         {(*Server).requestSpotInstances, true},
	"DescribeSpotInstanceRequests": {(*Server).describeSpotInstanceRequests, false},
	"CreateLaunchTemplate":         {(*Server).createLaunchTemplate, true},
}

// call is one EC2 request being served.
type call struct {
	action    string
	params    url.Values
	caller    caller
	requestID string
}

// maxBody bounds a Query API request body; real ones are a few KiB.
const maxBody = 1 << 20

// EC2Handler serves the EC2 Query API (the wire format of service/ec2):
// form-encoded POSTs, SigV4-authenticated with keys the world knows.
func (s *Server) EC2Handler() http.Handler {
	return http.HandlerFunc(s.serveEC2)
}

func (s *Server) serveEC2(rw http.ResponseWriter, r *http.Request) {
	c := &call{requestID: newRequestID()}
	log := s.log().With("request", c.requestID)

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		log.Warn("ec2: read request", "err", err)
		writeError(rw, c.requestID, errf("InvalidRequest", "could not read the request body"))
		return
	}
	if len(body) > maxBody {
		writeError(rw, c.requestID, errf("InvalidRequest", "request body too large"))
		return
	}
	params, err := requestParams(r, body)
	if err != nil {
		writeError(rw, c.requestID, errf("MalformedQueryString", "%v", err))
		return
	}
	c.params = params
	c.action = params.Get("Action")
	log = log.With("action", c.action)

	c.caller, err = s.authenticate(r, body)
	if err != nil {
		log.Info("ec2: authentication failed", "err", err)
		writeError(rw, c.requestID, asAPIError(err))
		return
	}
	log = log.With("caller", c.caller.name())

	act, ok := ec2Actions[c.action]
	if !ok {
		log.Info("ec2: unknown action")
		writeError(rw, c.requestID, errf("InvalidAction", "The action %s is not valid for this web service.", c.action))
		return
	}

	// Policy, dry run and faults come before the action, as on EC2.
	w := s.World
	w.mu.Lock()
	denied := w.deniedLocked(c.action)
	var f Fault
	var faulted bool
	if !denied && !c.dryRun() {
		if f, faulted = w.takeFaultLocked(c.action); faulted {
			s.saveLocked()
		}
	}
	w.mu.Unlock()
	switch {
	case denied:
		e := unauthorized(c.action, c.caller.principal)
		log.Info("ec2: denied", "code", e.Code)
		writeError(rw, c.requestID, e)
		return
	case c.dryRun():
		writeError(rw, c.requestID, newError("DryRunOperation", ""))
		return
	}
	if e := s.hostileBefore(rw, r, c); e != nil {
		log.Info("ec2: hostile", "code", e.Code)
		writeError(rw, c.requestID, e)
		return
	}
	if faulted {
		if !sleepCtx(r.Context(), f.Delay) {
			return
		}
		if e := f.apiError(); e != nil {
			log.Info("ec2: injected fault", "code", e.Code, "status", e.Status)
			writeError(rw, c.requestID, e)
			return
		}
	}

	w.mu.Lock()
	resp, e := act.fn(s, c)
	if e == nil && act.mutates {
		s.saveLocked()
	}
	w.mu.Unlock()
	if e != nil {
		log.Info("ec2: error", "code", e.Code, "msg", e.Message)
		writeError(rw, c.requestID, e)
		return
	}
	if act.mutates && s.hostileLose(rw, r, c) {
		return
	}
	if strings.HasPrefix(c.action, "Describe") {
		log.Debug("ec2: ok")
	} else {
		log.Info("ec2: ok")
	}
	writeResponse(rw, c.action, c.requestID, resp)
}

// requestParams merges the query string and a form-encoded body.
func requestParams(r *http.Request, body []byte) (url.Values, error) {
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, err
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	}
	return params, nil
}

func (c *call) dryRun() bool {
	return strings.EqualFold(c.params.Get("DryRun"), "true")
}

func asAPIError(err error) *APIError {
	if e, ok := err.(*APIError); ok {
		return e
	}
	return newError("InternalError", "")
}
