package ops

import (
	"bytes"
	"fmt"
	"path"
	"strings"
)

// UserDataOpts describe the spotroot configuration to render.
type UserDataOpts struct {
	Volume string // NAME (tag Name=NAME) or vol-… id
	Pool   string // claim any free volume of this pool instead
	Mount  string // "" or "/" = the root; else a data volume's mount point
	// EC2Endpoint is written as spotroot.ec2_endpoint (VPC endpoints).
	EC2Endpoint string
}

func (o UserDataOpts) check() error {
	if (o.Volume == "") == (o.Pool == "") {
		return fmt.Errorf("name the volume with exactly one of --volume NAME|vol-… or --pool P")
	}
	if o.Mount != "" && (!path.IsAbs(o.Mount) || path.Clean(o.Mount) != o.Mount) {
		return fmt.Errorf("--mount %q: must be a clean absolute path such as /home", o.Mount)
	}
	return nil
}

// spotrootMapping renders the mapping under the spotroot: key, indented.
func (o UserDataOpts) spotrootMapping(indent string) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, indent+f+"\n", a...) }
	w("volume:")
	switch {
	case o.Pool != "":
		w("  pool: {%s: %s}", PoolKey, yamlString(o.Pool))
	case strings.HasPrefix(o.Volume, "vol-"):
		w("  id: %s", o.Volume)
	default:
		w("  tag: {Name: %s}", yamlString(o.Volume))
	}
	if o.Mount != "" && o.Mount != "/" {
		w("  mount: %s", o.Mount)
	}
	if o.EC2Endpoint != "" {
		w("ec2_endpoint: %s", o.EC2Endpoint)
	}
	return b.String()
}

// CloudConfig renders #cloud-config user-data with a spotroot key
// (cloud-init ignores keys it does not know).
func CloudConfig(o UserDataOpts) ([]byte, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return []byte("#cloud-config\nspotroot:\n" + o.spotrootMapping("  ")), nil
}

// MIMEBoundary separates the parts of MIME user-data (fixed, so the output
// is reproducible).
const MIMEBoundary = "==SPOTROOT-BOUNDARY=="

// MIME renders a multipart/mixed archive with a text/x-spotroot part, to
// combine with other cloud-init parts.
func MIME(o UserDataOpts) ([]byte, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\nMIME-Version: 1.0\n\n", MIMEBoundary)
	fmt.Fprintf(&b, "--%s\nContent-Type: text/x-spotroot; charset=\"us-ascii\"\nMIME-Version: 1.0\nContent-Disposition: attachment; filename=\"spotroot.yaml\"\n\n", MIMEBoundary)
	b.WriteString(o.spotrootMapping(""))
	fmt.Fprintf(&b, "\n--%s--\n", MIMEBoundary)
	return b.Bytes(), nil
}

// yamlString quotes s unless it is a plain, unambiguous YAML scalar.
func yamlString(s string) string {
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			plain = false
		}
	}
	switch strings.ToLower(s) {
	case "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~":
		plain = false
	}
	if plain {
		return s
	}
	return fmt.Sprintf("%q", s)
}
