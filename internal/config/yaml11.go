package config

import (
	"bytes"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// cloud-init reads user-data with PyYAML's safe loader, a YAML 1.1 reader;
// go.yaml.in/yaml/v3 follows YAML 1.2. These are PyYAML's implicit
// resolvers (yaml/resolver.py), so spotroot can say when a plain scalar
// means something else to cloud-init than the text it reads itself. Note
// what is *not* there: y/n are strings in PyYAML (the YAML 1.1 spec lists
// them, PyYAML does not), and 1e3 is a string (PyYAML's float needs a dot).
//
// The regexps compile on first use, not at start: PID 1 pays for package
// initialisation on every boot, and most scalars (ids, paths, names) never
// reach them (numbers start with a sign, a digit or a dot).
var (
	yaml11Bool = map[string]bool{"yes": true, "Yes": true, "YES": true, "no": true, "No": true, "NO": true,
		"true": true, "True": true, "TRUE": true, "false": true, "False": true, "FALSE": true,
		"on": true, "On": true, "ON": true, "off": true, "Off": true, "OFF": true}
	yaml11Null  = map[string]bool{"~": true, "null": true, "Null": true, "NULL": true}
	yaml11Float = lazyRegexp(`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)
	yaml11Int   = lazyRegexp(`^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`)
)

// lazyRegexp compiles expr once, when first asked for.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// numeric: s may be one of PyYAML's numbers (each form starts so).
func numeric(s string) bool {
	return s != "" && strings.ContainsRune("+-.0123456789", rune(s[0]))
}

// ResolveYAML11 reports what PyYAML makes of a plain scalar when that is
// not the text itself: kind ("a boolean", "an integer", …) and the value
// Python would print. differs is false when the text survives as written.
func ResolveYAML11(s string) (kind, value string, differs bool) {
	switch {
	case yaml11Bool[s]:
		v := "False"
		if strings.Contains("yYtToO", s[:1]) && !strings.EqualFold(s, "off") {
			v = "True"
		}
		return "a boolean", v, true
	case yaml11Null[s]:
		return "null", "None", true
	case !numeric(s):
		return "", "", false
	case yaml11Int().MatchString(s):
		v := pyInt(s)
		return "an integer", v, v != s
	case yaml11Float().MatchString(s):
		v := pyFloat(s)
		return "a float", v, v != s
	}
	return "", "", false
}

// pyInt mirrors PyYAML's construct_yaml_int.
func pyInt(s string) string {
	v := strings.ReplaceAll(s, "_", "")
	sign := ""
	if v[0] == '-' || v[0] == '+' {
		if v[0] == '-' {
			sign = "-"
		}
		v = v[1:]
	}
	n := new(big.Int)
	switch {
	case v == "0":
		return "0"
	case strings.HasPrefix(v, "0b"):
		n.SetString(v[2:], 2)
	case strings.HasPrefix(v, "0x"):
		n.SetString(v[2:], 16)
	case strings.HasPrefix(v, "0"):
		n.SetString(v[1:], 8)
	case strings.Contains(v, ":"):
		for _, d := range strings.Split(v, ":") {
			x, _ := strconv.ParseInt(d, 10, 64)
			n.Mul(n, big.NewInt(60))
			n.Add(n, big.NewInt(x))
		}
	default:
		n.SetString(v, 10)
	}
	if n.Sign() == 0 {
		return "0"
	}
	return sign + n.String()
}

// pyFloat approximates Python's repr of PyYAML's construct_yaml_float.
func pyFloat(s string) string {
	v := strings.ToLower(strings.ReplaceAll(s, "_", ""))
	switch strings.TrimLeft(v, "+-") {
	case ".inf":
		if strings.HasPrefix(v, "-") {
			return "-inf"
		}
		return "inf"
	case ".nan":
		return "nan"
	}
	var f float64
	if strings.Contains(v, ":") {
		sign := 1.0
		if v[0] == '-' || v[0] == '+' {
			if v[0] == '-' {
				sign = -1
			}
			v = v[1:]
		}
		for _, d := range strings.Split(v, ":") {
			x, _ := strconv.ParseFloat(d, 64)
			f = f*60 + x
		}
		f *= sign
	} else {
		f, _ = strconv.ParseFloat(v, 64)
	}
	r := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(r, ".e") {
		r += ".0"
	}
	return r
}

// checkTemplate refuses jinja syntax inside the spotroot section of a
// "## template: jinja" user-data: cloud-init would render it, spotroot
// (PID 1, before any instance data exists) cannot. Outside that section
// templates are cloud-init's business.
func checkTemplate(doc []byte) error {
	lines := bytes.Split(doc, []byte("\n"))
	in := false
	for i, l := range lines {
		s := string(l)
		if i == 0 {
			continue // the header
		}
		top := len(s) > 0 && s[0] != ' ' && s[0] != '\t' && s[0] != '#'
		if top {
			in = strings.HasPrefix(s, "spotroot:")
		}
		if strings.Contains(s, "{{") || strings.Contains(s, "{%") || strings.Contains(s, "{#") {
			if in {
				return fmt.Errorf("user-data line %d: the spotroot section uses jinja (%s), which cloud-init renders but spotroot cannot (it runs before any instance data exists): write the values literally", i+1, strings.TrimSpace(s))
			}
			if top {
				// A block tag at the top level can wrap the spotroot key
				// itself: what spotroot reads unrendered is not what
				// cloud-init sees.
				return fmt.Errorf("user-data line %d: jinja control structure (%s) at the top level of a ## template: jinja user-data: spotroot reads the template unrendered; keep the spotroot section outside {%% … %%} blocks and without template syntax", i+1, strings.TrimSpace(s))
			}
		}
	}
	return nil
}
