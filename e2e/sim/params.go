package sim

import (
	"encoding/base64"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Query API lists are flattened as Name.1, Name.2, ... and structures as
// Name.N.Field; these helpers read them back.

// indexes returns the N of every "prefix.N" or "prefix.N.*" key, sorted.
func (c *call) indexes(prefix string) []int {
	seen := map[int]bool{}
	for k := range c.params {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		if n, err := strconv.Atoi(num); err == nil && n > 0 {
			seen[n] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// list reads prefix.1, prefix.2, ... as strings.
func (c *call) list(prefix string) []string {
	var out []string
	for _, n := range c.indexes(prefix) {
		out = append(out, c.params.Get(fmt.Sprintf("%s.%d", prefix, n)))
	}
	return out
}

func (c *call) str(name string) string { return c.params.Get(name) }

// boolean reads an optional boolean parameter.
func (c *call) boolean(name string) (bool, *APIError) {
	v := c.params.Get(name)
	switch strings.ToLower(v) {
	case "":
		return false, nil
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errInvalidParam("Value (%s) for parameter %s is invalid. Expected a boolean.", v, name)
}

// integer reads an optional integer parameter; ok is false when absent.
func (c *call) integer(name string) (n int, ok bool, e *APIError) {
	v := c.params.Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false, errInvalidParam("Value (%s) for parameter %s is invalid. Expected an integer.", v, name)
	}
	return n, true, nil
}

// tagList reads prefix.N.Key / prefix.N.Value pairs in order; a missing
// Value is "" with hasValue false (DeleteTags tells them apart).
type tagParam struct {
	Key, Value string
	hasValue   bool
}

func (c *call) tagList(prefix string) []tagParam {
	var out []tagParam
	for _, n := range c.indexes(prefix) {
		p := fmt.Sprintf("%s.%d.", prefix, n)
		_, has := c.params[p+"Value"]
		out = append(out, tagParam{Key: c.params.Get(p + "Key"), Value: c.params.Get(p + "Value"), hasValue: has})
	}
	return out
}

// tagSpecs reads TagSpecification.N.{ResourceType,Tag.M} for resourceType.
func (c *call) tagSpecs(resourceType string) (map[string]string, *APIError) {
	tags := map[string]string{}
	for _, n := range c.indexes("TagSpecification") {
		p := fmt.Sprintf("TagSpecification.%d", n)
		rt := c.params.Get(p + ".ResourceType")
		if rt != resourceType {
			return nil, errInvalidParam("'%s' is not a valid taggable resource type for this operation.", rt)
		}
		for _, t := range c.tagList(p + ".Tag") {
			if e := checkTag(t.Key, t.Value); e != nil {
				return nil, e
			}
			tags[t.Key] = t.Value
		}
	}
	return tags, nil
}

func checkTag(k, v string) *APIError {
	switch {
	case k == "":
		return errInvalidParam("Tag key must not be empty")
	case len(k) > 128:
		return errInvalidParam("Tag key exceeds the maximum length of 128 characters")
	case len(v) > 256:
		return errInvalidParam("Tag value exceeds the maximum length of 256 characters")
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return errInvalidParam("Tag keys starting with 'aws:' are reserved for internal use")
	}
	return nil
}

// filter is one Filter.N: a name and glob values (any may match).
type filter struct {
	name   string
	values []*regexp.Regexp
}

// filters reads Filter.N.Name / Filter.N.Value.M, accepting only names in
// known (and tag:<key>).
func (c *call) filters(known ...string) ([]filter, *APIError) {
	var out []filter
	for _, n := range c.indexes("Filter") {
		p := fmt.Sprintf("Filter.%d", n)
		name := c.params.Get(p + ".Name")
		if !strings.HasPrefix(name, "tag:") && name != "tag-key" && name != "tag-value" && !slices.Contains(known, name) {
			return nil, errInvalidParam("The filter '%s' is invalid", name)
		}
		f := filter{name: name}
		for _, v := range c.list(p + ".Value") {
			f.values = append(f.values, globRegexp(v))
		}
		out = append(out, f)
	}
	return out, nil
}

// globRegexp compiles an EC2 filter value: * and ? are wildcards, \ escapes.
func globRegexp(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		switch ch := glob[i]; ch {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '\\':
			if i+1 < len(glob) {
				i++
				b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
			} else {
				b.WriteString(`\\`)
			}
		default:
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// match reports whether any of the resource's values for this filter
// matches any filter value.
func (f filter) match(have []string) bool {
	for _, h := range have {
		for _, re := range f.values {
			if re.MatchString(h) {
				return true
			}
		}
	}
	return false
}

// matchAll applies every filter (they AND); fields gives a resource's
// values for a filter name; tags serve tag:<key> and tag-key.
func matchAll(fs []filter, tags map[string]string, fields func(name string) []string) bool {
	for _, f := range fs {
		var have []string
		switch {
		case strings.HasPrefix(f.name, "tag:"):
			if v, ok := tags[strings.TrimPrefix(f.name, "tag:")]; ok {
				have = []string{v}
			}
		case f.name == "tag-key":
			have = slices.Collect(maps.Keys(tags))
		case f.name == "tag-value":
			have = slices.Collect(maps.Values(tags))
		default:
			have = fields(f.name)
		}
		if !f.match(have) {
			return false
		}
	}
	return true
}

// page cuts n sorted results per MaxResults/NextToken: results[start:end],
// with the token for the next page ("" on the last).
func (c *call) page(n, minResults, maxResults int) (start, end int, next string, e *APIError) {
	limit, has, e := c.integer("MaxResults")
	if e != nil {
		return 0, 0, "", e
	}
	if has && (limit < minResults || limit > maxResults) {
		return 0, 0, "", errInvalidParam("Value ( %d ) for parameter maxResults is invalid. Expecting a value greater than %d and less than %d.", limit, minResults-1, maxResults+1)
	}
	if tok := c.str("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		off, ok := strings.CutPrefix(string(b), "offset:")
		var err2 error
		start, err2 = strconv.Atoi(off)
		if err != nil || !ok || err2 != nil || start < 0 || start > n {
			return 0, 0, "", errInvalidParam("The token '%s' is invalid.", tok)
		}
	}
	end = n
	if has && start+limit < n {
		end = start + limit
		next = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(end)))
	}
	return start, end, next, nil
}
