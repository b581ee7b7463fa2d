package sim

import (
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	imdsTokenHeader = "X-Aws-Ec2-Metadata-Token"
	imdsTTLHeader   = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	imdsMaxTTL      = 21600
)

// IMDSHandler serves instanceID's metadata the way IMDSv2 does (tokens
// required unless the instance has IMDSv1Only). One handler per VM; the
// harness forwards the guest's 169.254.169.254:80 to it.
func (s *Server) IMDSHandler(instanceID string) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s.serveIMDS(instanceID, rw, r)
	})
}

func (s *Server) serveIMDS(id string, rw http.ResponseWriter, r *http.Request) {
	w := s.World
	w.mu.Lock()
	inst, ok := w.Instances[id]
	hostNow := w.ec2NowLocked()
	var delay time.Duration
	var fail, v1only bool
	if ok {
		delay, v1only = inst.IMDSDelay, inst.IMDSv1Only
		if inst.IMDSFailFirst > 0 {
			inst.IMDSFailFirst--
			fail = true
			s.saveLocked()
		}
	}
	w.mu.Unlock()

	rw.Header().Set("Server", "EC2ws")
	// IMDS answers from the instance's host, whose clock is EC2's (the
	// hostile profile's ClockSkew is the guest's clock being off, not
	// EC2's): every answer carries it as Date, as AWS's own IMDSv2
	// examples show ("Date: Mon, 12 Sep 2022 21:58:03 GMT", "Server: EC2ws",
	// https://docs.aws.amazon.com/snowball/latest/developer-guide/imds-code-examples.html;
	// the EC2 user guide's "Retrieve instance metadata" shows the same).
	rw.Header().Set("Date", hostNow.UTC().Format(http.TimeFormat))
	if !ok {
		imdsError(rw, http.StatusNotFound)
		return
	}
	if !sleepCtx(r.Context(), delay) {
		return
	}
	log := s.log().With("instance", id, "method", r.Method, "path", r.URL.Path)
	if fail {
		log.Debug("imds: injected 503")
		imdsError(rw, http.StatusServiceUnavailable)
		return
	}

	if r.URL.Path == "/latest/api/token" {
		if r.Method != http.MethodPut {
			rw.Header().Set("Allow", "PUT")
			imdsError(rw, http.StatusMethodNotAllowed)
			return
		}
		s.serveIMDSToken(id, v1only, rw, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rw.Header().Set("Allow", "GET, HEAD")
		imdsError(rw, http.StatusMethodNotAllowed)
		return
	}
	if !v1only {
		left, ok := s.checkIMDSToken(id, r.Header.Get(imdsTokenHeader))
		if !ok {
			log.Debug("imds: no valid token")
			imdsError(rw, http.StatusUnauthorized)
			return
		}
		rw.Header().Set(imdsTTLHeader, strconv.Itoa(left))
	}

	body, status := s.imdsLookup(id, r.URL.Path)
	if status != http.StatusOK {
		log.Debug("imds: not found")
		imdsError(rw, status)
		return
	}
	log.Debug("imds: served")
	rw.Header().Set("Content-Type", "text/plain")
	rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
	rw.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		rw.Write(body)
	}
}

// serveIMDSToken issues a session token. Like IMDS it refuses requests
// that went through a proxy (X-Forwarded-For), which is the point of v2.
func (s *Server) serveIMDSToken(id string, v1only bool, rw http.ResponseWriter, r *http.Request) {
	if v1only {
		// An IMDS without v2 support, or one with the endpoint locked down.
		imdsError(rw, http.StatusForbidden)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		imdsError(rw, http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(imdsTTLHeader))
	if err != nil || ttl < 1 || ttl > imdsMaxTTL {
		imdsError(rw, http.StatusBadRequest)
		return
	}
	tok := "AQAEA" + strings.NewReplacer("+", "-", "/", "_", "=", "").Replace(randBase64(39))
	now := s.now()
	s.mu.Lock()
	m := s.tokens[id]
	if m == nil {
		m = map[string]time.Time{}
		s.tokens[id] = m
	}
	maps.DeleteFunc(m, func(_ string, exp time.Time) bool { return !now.Before(exp) })
	m[tok] = now.Add(time.Duration(ttl) * time.Second)
	s.mu.Unlock()

	s.log().Debug("imds: token issued", "instance", id, "ttl", ttl)
	rw.Header().Set(imdsTTLHeader, strconv.Itoa(ttl))
	rw.Header().Set("Content-Type", "text/plain")
	rw.Header().Set("Content-Length", strconv.Itoa(len(tok)))
	rw.WriteHeader(http.StatusOK)
	rw.Write([]byte(tok))
}

// checkIMDSToken returns the token's remaining seconds.
func (s *Server) checkIMDSToken(id, tok string) (int, bool) {
	if tok == "" {
		return 0, false
	}
	s.mu.Lock()
	exp, ok := s.tokens[id][tok]
	s.mu.Unlock()
	left := exp.Sub(s.now())
	if !ok || left <= 0 {
		return 0, false
	}
	return int((left + time.Second - 1) / time.Second), true
}

// imdsError answers like IMDS: a status page in HTML.
func imdsError(rw http.ResponseWriter, status int) {
	text := fmt.Sprintf("%d - %s", status, http.StatusText(status))
	body := `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>` + text + `</title>
 </head>
 <body>
  <h1>` + text + `</h1>
 </body>
</html>
`
	rw.Header().Set("Content-Type", "text/html")
	rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
	rw.WriteHeader(status)
	rw.Write([]byte(body))
}

// versionPattern matches the dated API versions IMDS accepts besides
// "latest"; all of them serve the same data here.
var versionPattern = regexp.MustCompile(`^(latest|1\.0|\d{4}-\d{2}-\d{2})$`)

// imdsLookup resolves a GET path to a body.
func (s *Server) imdsLookup(id, urlPath string) ([]byte, int) {
	p := strings.TrimPrefix(urlPath, "/")
	if p == "" {
		return []byte("latest\n"), http.StatusOK
	}
	version, rest, _ := strings.Cut(p, "/")
	if !versionPattern.MatchString(version) {
		return nil, http.StatusNotFound
	}

	w := s.World
	w.mu.Lock()
	inst, ok := w.Instances[id]
	if !ok {
		w.mu.Unlock()
		return nil, http.StatusNotFound
	}
	userData := slices.Clone(inst.UserData)
	meta := s.metadataLocked(inst)
	if inst.Role != "" && strings.HasPrefix(rest, "meta-data/iam/security-credentials/") &&
		strings.TrimSuffix(strings.TrimPrefix(rest, "meta-data/iam/security-credentials/"), "/") != "" &&
		w.credentialsHiddenLocked(inst, time.Now()) {
		delete(meta, "iam/security-credentials/"+inst.Role)
	}
	dynamic := s.dynamicLocked(inst)
	w.mu.Unlock()

	top, sub, _ := strings.Cut(rest, "/")
	switch top {
	case "":
		list := "dynamic\nmeta-data"
		if len(userData) > 0 {
			list += "\nuser-data"
		}
		return []byte(list), http.StatusOK
	case "user-data":
		if len(userData) == 0 || sub != "" {
			return nil, http.StatusNotFound
		}
		return userData, http.StatusOK
	case "meta-data":
		return treeLookup(meta, sub)
	case "dynamic":
		return treeLookup(dynamic, sub)
	}
	return nil, http.StatusNotFound
}

// treeLookup serves a leaf, or lists a directory's children (directories
// with a trailing slash), from a flat path → value map.
func treeLookup(tree map[string]string, p string) ([]byte, int) {
	if v, ok := tree[p]; ok {
		return []byte(v), http.StatusOK
	}
	dir := strings.TrimSuffix(p, "/")
	prefix := dir + "/"
	if dir == "" {
		prefix = ""
	}
	seen := map[string]bool{}
	for k := range tree {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if child, _, isDir := strings.Cut(rest, "/"); isDir {
			seen[child+"/"] = true
		} else {
			seen[child] = true
		}
	}
	if len(seen) == 0 {
		return nil, http.StatusNotFound
	}
	return []byte(strings.Join(slices.Sorted(maps.Keys(seen)), "\n")), http.StatusOK
}

// PostSpotAction posts a Spot interruption notice (action terminate, stop
// or hibernate) for time at; IMDS shows it at spot/instance-action.
func (s *Server) PostSpotAction(instanceID, action string, at time.Time) {
	err := s.World.Update(func(w *World) error {
		i, ok := w.Instances[instanceID]
		if !ok {
			return fmt.Errorf("post spot action to %s: no such instance", instanceID)
		}
		i.SpotAction = &SpotAction{Action: action, Time: at.UTC().Truncate(time.Second)}
		return nil
	})
	if err != nil {
		s.log().Error("post spot action", "err", err)
	}
}

// PostRebalance posts a rebalance recommendation noticed at at.
func (s *Server) PostRebalance(instanceID string, at time.Time) {
	err := s.World.Update(func(w *World) error {
		i, ok := w.Instances[instanceID]
		if !ok {
			return fmt.Errorf("post rebalance to %s: no such instance", instanceID)
		}
		t := at.UTC().Truncate(time.Second)
		i.Rebalance = &t
		return nil
	})
	if err != nil {
		s.log().Error("post rebalance", "err", err)
	}
}

// ClearNotices withdraws posted spot and rebalance notices.
func (s *Server) ClearNotices(instanceID string) {
	err := s.World.Update(func(w *World) error {
		i, ok := w.Instances[instanceID]
		if !ok {
			return fmt.Errorf("clear notices of %s: no such instance", instanceID)
		}
		i.SpotAction, i.Rebalance = nil, nil
		return nil
	})
	if err != nil {
		s.log().Error("clear notices", "err", err)
	}
}

// SetTargetLifecycleState sets the Auto Scaling target lifecycle state IMDS
// shows (autoscaling/target-lifecycle-state); "" removes it.
func (s *Server) SetTargetLifecycleState(instanceID, state string) {
	err := s.World.Update(func(w *World) error {
		i, ok := w.Instances[instanceID]
		if !ok {
			return fmt.Errorf("set target lifecycle state of %s: no such instance", instanceID)
		}
		i.TargetLifecycleState = state
		return nil
	})
	if err != nil {
		s.log().Error("set target lifecycle state", "err", err)
	}
}
