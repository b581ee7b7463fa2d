package config

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrNotConfigured means the source carries no spotroot section: not an error,
// the image boots its own init quietly.
var ErrNotConfigured = errors.New("no spotroot configuration")

// MIME content type of a user-data part that carries spotroot's own YAML.
const MIMEType = "text/x-spotroot"

type sourceSet []string

// Sources lists where the configuration came from, lowest precedence first.
func (c *Config) Sources() []string { return c.source }

// Load builds the effective configuration from the image file (may be nil),
// user-data (may be nil) and the kernel command line. It returns
// ErrNotConfigured (wrapped) when no source names a volume and nothing
// disabled spotroot.
func Load(imageFile, userData []byte, cmdline string) (*Config, error) {
	c := Defaults
	c.Volumes = nil
	if len(bytes.TrimSpace(imageFile)) > 0 {
		if err := c.applyYAML(imageFile, "image config", false); err != nil && !errors.Is(err, ErrNotConfigured) {
			return nil, err
		}
	}
	if len(userData) > 0 {
		doc, err := ExtractUserData(userData)
		switch {
		case errors.Is(err, ErrNotConfigured):
		case err != nil:
			return nil, err
		default:
			c.warnings = append(c.warnings, doc.Warnings...)
			if doc.Template != "" {
				if err := checkTemplate(doc.YAML); err != nil {
					return nil, err
				}
			}
			if err := c.applyYAML(doc.YAML, "user-data", doc.Bare); err != nil && !errors.Is(err, ErrNotConfigured) {
				if doc.Template != "" {
					return nil, fmt.Errorf("%w (this user-data is a jinja template, which cloud-init renders first; spotroot reads it unrendered)", err)
				}
				return nil, err
			}
		}
	}
	if err := c.applyCmdline(cmdline); err != nil {
		return nil, err
	}
	if c.Disabled {
		return &c, nil
	}
	if len(c.Volumes) == 0 {
		return &c, fmt.Errorf("%w (user-data, kernel command line and image config name no volume)", ErrNotConfigured)
	}
	return &c, nil
}

// UserDataDoc is the spotroot YAML found inside user-data.
type UserDataDoc struct {
	YAML []byte
	// Bare means the document is the spotroot mapping itself (a text/x-spotroot
	// MIME part), not a cloud-config with a top-level spotroot key.
	Bare bool
	// Template is "jinja" for a "## template: jinja" document: spotroot does
	// not render it, and refuses template syntax in its own section.
	Template string
	// Warnings are things cloud-init reads differently (a byte order mark).
	Warnings []string
}

var utf8BOM = []byte("\xef\xbb\xbf")

// cutTemplateHeader recognises cloud-init's "## template: NAME" first line.
func cutTemplateHeader(ud []byte) (name string, rest []byte, ok bool) {
	first, rest, _ := bytes.Cut(ud, []byte("\n"))
	f := strings.TrimSpace(string(first))
	after, ok := strings.CutPrefix(f, "##")
	if !ok {
		return "", nil, false
	}
	after, ok = strings.CutPrefix(strings.TrimSpace(after), "template:")
	if !ok {
		return "", nil, false
	}
	return strings.TrimSpace(after), rest, true
}

// ExtractUserData finds spotroot's YAML in user-data as cloud-init would see
// it: gzip-compressed or base64-encoded payloads are unwrapped, MIME multipart
// archives are searched for a text/x-spotroot or text/cloud-config part.
func ExtractUserData(ud []byte) (UserDataDoc, error) {
	for range 3 { // gzip inside base64 at most
		switch {
		case bytes.HasPrefix(ud, []byte{0x1f, 0x8b}):
			zr, err := gzip.NewReader(bytes.NewReader(ud))
			if err != nil {
				return UserDataDoc{}, fmt.Errorf("user-data: gzip header: %w", err)
			}
			out, err := io.ReadAll(io.LimitReader(zr, 16<<20))
			if err != nil {
				return UserDataDoc{}, fmt.Errorf("user-data: gunzip: %w (the gzip data is corrupt or truncated)", err)
			}
			ud = out
			continue
		case looksBase64(ud):
			if out, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(ud))); err == nil {
				ud = out
				continue
			}
		}
		break
	}
	var warnings []string
	if b, ok := bytes.CutPrefix(ud, utf8BOM); ok {
		// cloud-init does not recognise a header behind a byte order mark
		// and ignores such user-data entirely (hetznercloud/cli#511, an
		// editor on Windows adds it); spotroot reads it, and says so.
		ud = b
		warnings = append(warnings, "user-data starts with a UTF-8 byte order mark: cloud-init does not recognise the header behind it and ignores the whole user-data (spotroot reads it); save the file without the BOM")
	}
	template := ""
	if line, rest, ok := cutTemplateHeader(ud); ok {
		// cloud-init renders "## template: jinja" user-data with the
		// instance data before it reads the YAML; the header line itself
		// is a YAML comment, so line numbers stay those of the file.
		if !strings.EqualFold(line, "jinja") {
			return UserDataDoc{}, fmt.Errorf("user-data line 1: \"## template: %s\": cloud-init knows only jinja templates", line)
		}
		template = "jinja"
		if !bytes.HasPrefix(bytes.TrimLeft(rest, " \t\r\n"), []byte("#cloud-config")) {
			return UserDataDoc{}, fmt.Errorf("user-data line 2: a jinja template (## template: jinja) must continue with #cloud-config for spotroot to read it: %w", ErrNotConfigured)
		}
		return UserDataDoc{YAML: ud, Template: template, Warnings: warnings}, nil
	}
	trimmed := bytes.TrimLeft(ud, " \t\r\n")
	switch {
	case bytes.HasPrefix(trimmed, []byte("#cloud-config")):
		return UserDataDoc{YAML: ud, Warnings: warnings}, nil
	case bytes.HasPrefix(trimmed, []byte("Content-Type:")) || bytes.HasPrefix(trimmed, []byte("MIME-Version:")):
		return extractMIME(trimmed)
	}
	return UserDataDoc{}, ErrNotConfigured
}

func looksBase64(b []byte) bool {
	b = bytes.TrimSpace(b)
	if len(b) < 8 || len(b)%4 != 0 {
		return false
	}
	for _, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=' || c == '\n' || c == '\r') {
			return false
		}
	}
	return true
}

func extractMIME(ud []byte) (UserDataDoc, error) {
	msg, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(ud)))
	if err != nil {
		return UserDataDoc{}, fmt.Errorf("user-data: MIME headers: %w", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return UserDataDoc{}, fmt.Errorf("user-data: MIME Content-Type: %w", err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		body, _ := io.ReadAll(msg.Body)
		return partDoc(mt, msg.Header.Get("Content-Transfer-Encoding"), body)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var fallback *UserDataDoc
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return UserDataDoc{}, fmt.Errorf("user-data: MIME multipart: %w", err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			return UserDataDoc{}, fmt.Errorf("user-data: MIME part: %w", err)
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		doc, err := partDoc(pt, p.Header.Get("Content-Transfer-Encoding"), body)
		if errors.Is(err, ErrNotConfigured) {
			continue
		}
		if err != nil {
			return UserDataDoc{}, err
		}
		if doc.Bare {
			return doc, nil // our own part wins over a cloud-config key
		}
		if hasSpotrootKey(doc.YAML) && fallback == nil {
			fallback = &doc
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	return UserDataDoc{}, ErrNotConfigured
}

func partDoc(mediaType, cte string, body []byte) (UserDataDoc, error) {
	if strings.EqualFold(strings.TrimSpace(cte), "base64") {
		dec, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(body), nil)))
		if err != nil {
			return UserDataDoc{}, fmt.Errorf("user-data: MIME part %s: base64: %w", mediaType, err)
		}
		body = dec
	}
	switch mediaType {
	case MIMEType:
		return UserDataDoc{YAML: body, Bare: true}, nil
	case "text/cloud-config":
		return UserDataDoc{YAML: body}, nil
	}
	return UserDataDoc{}, ErrNotConfigured
}

func hasSpotrootKey(doc []byte) bool {
	var top map[string]yaml.Node
	return yaml.Unmarshal(doc, &top) == nil && top["spotroot"].Kind != 0
}

// applyYAML decodes the spotroot section of doc over c, rejecting unknown
// fields with the line they are on.
func (c *Config) applyYAML(doc []byte, where string, bare bool) error {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return fmt.Errorf("%s: %s", where, cleanYAMLError(err))
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return ErrNotConfigured
	}
	node := root.Content[0]
	if !bare {
		if node.Kind != yaml.MappingNode {
			return fmt.Errorf("%s line %d: the document must be a mapping with a spotroot key", where, node.Line)
		}
		var sec *yaml.Node
		for i := 0; i+1 < len(node.Content); i += 2 {
			if node.Content[i].Value == "spotroot" {
				sec = node.Content[i+1]
			}
		}
		if sec == nil {
			return ErrNotConfigured
		}
		node = sec
	}
	if node.Kind != yaml.MappingNode {
		return fmt.Errorf("%s line %d: spotroot: must be a mapping (key: value lines), got %s", where, node.Line, kindName(node))
	}
	if err := checkFields(node, reflect.TypeOf(Config{}), "spotroot", where); err != nil {
		return err
	}
	var layer Config
	if err := node.Decode(&layer); err != nil {
		return fmt.Errorf("%s: %s", where, cleanYAMLError(err))
	}
	if err := layer.normalize(where, node); err != nil {
		return err
	}
	c.merge(layer)
	c.source = append(c.source, where)
	return nil
}

// merge lays the fields a higher-precedence source set over c. Volumes are
// replaced as a whole: a user-data volume list is the operator's full intent.
func (c *Config) merge(o Config) {
	if len(o.Volumes) > 0 {
		c.Volumes = o.Volumes
	}
	for _, s := range []struct {
		dst *string
		src string
	}{
		{&c.Init, o.Init}, {&c.ImageInit, o.ImageInit}, {&c.EC2Endpoint, o.EC2Endpoint},
		{&c.LogLevel, o.LogLevel}, {&c.Interface, o.Interface}, {&c.CrossAZ, o.CrossAZ}, {&c.OnFailure, o.OnFailure},
		{&c.IMDS, o.IMDS},
	} {
		if s.src != "" {
			*s.dst = s.src
		}
	}
	for _, d := range []struct {
		dst *Duration
		src Duration
	}{
		{&c.Timeouts.Network, o.Timeouts.Network}, {&c.Timeouts.IMDS, o.Timeouts.IMDS},
		{&c.Timeouts.Attach, o.Timeouts.Attach}, {&c.Timeouts.Device, o.Timeouts.Device},
		{&c.Timeouts.Create, o.Timeouts.Create}, {&c.Timeouts.Detach, o.Timeouts.Detach},
		{&c.Timeouts.Move, o.Timeouts.Move}, {&c.Timeouts.Fsck, o.Timeouts.Fsck},
	} {
		if d.src != 0 {
			*d.dst = d.src
		}
	}
	c.ForceDetach = c.ForceDetach || o.ForceDetach
	c.DeleteMoved = c.DeleteMoved || o.DeleteMoved
	c.TagClaims = c.TagClaims || o.TagClaims
	c.Disabled = c.Disabled || o.Disabled
}

// checkFields walks node against t and names the first field t does not have,
// with its line. It also refuses YAML 1.1 booleans (yes/no/on/off) where a
// string is expected, the usual cause of a `tag: {Env: no}` surprise.
func checkFields(node *yaml.Node, t reflect.Type, field, where string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && node.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			f, ok := fieldByTag(t, k.Value)
			if !ok {
				return fmt.Errorf("%s line %d: %s.%s: unknown field (known: %s)", where, k.Line, field, k.Value, strings.Join(tagNames(t), ", "))
			}
			if err := checkFields(v, f.Type, field+"."+k.Value, where); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Struct && t != reflect.TypeOf(Duration(0)):
		return fmt.Errorf("%s line %d: %s: must be a mapping, got %s", where, node.Line, field, kindName(node))
	case t.Kind() == reflect.Slice && node.Kind == yaml.SequenceNode:
		for i, item := range node.Content {
			if err := checkFields(item, t.Elem(), fmt.Sprintf("%s[%d]", field, i), where); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Slice:
		return fmt.Errorf("%s line %d: %s: must be a list, got %s", where, node.Line, field, kindName(node))
	case t.Kind() == reflect.Map && node.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(node.Content); i += 2 {
			if err := checkFields(node.Content[i+1], t.Elem(), field+"."+node.Content[i].Value, where); err != nil {
				return err
			}
		}
	case t.Kind() == reflect.Map:
		return fmt.Errorf("%s line %d: %s: must be a mapping like {Name: my-root}, got %s", where, node.Line, field, kindName(node))
	case t.Kind() == reflect.String:
		if node.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s line %d: %s: must be a single value, got %s", where, node.Line, field, kindName(node))
		}
		if node.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			if kind, value, differs := ResolveYAML11(node.Value); differs {
				return fmt.Errorf("%s line %d: %s: %q reads as %s %s in YAML 1.1, as cloud-init reads it; quote it (\"%s\") if you mean the text", where, node.Line, field, node.Value, kind, value, node.Value)
			}
		}
	}
	return nil
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag := strings.Split(f.Tag.Get("yaml"), ",")[0]; tag == name && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagNames(t reflect.Type) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" && t.Field(i).IsExported() {
			out = append(out, tag)
		}
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func cleanYAMLError(err error) string {
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// EndpointHint reads spotroot.ec2_endpoint from user-data that may not
// pass validation (an unknown field elsewhere, a bad value): the failed
// boot still wants to reach EC2 to mark itself. "" when there is none, or
// when it is not https:// (user-data may name only https:// endpoints).
func EndpointHint(userData []byte) string {
	doc, err := ExtractUserData(userData)
	if err != nil {
		return ""
	}
	var v struct {
		EC2Endpoint string `yaml:"ec2_endpoint"`
		Spotroot    struct {
			EC2Endpoint string `yaml:"ec2_endpoint"`
		} `yaml:"spotroot"`
	}
	if yaml.Unmarshal(doc.YAML, &v) != nil {
		return ""
	}
	e := v.Spotroot.EC2Endpoint
	if doc.Bare {
		e = v.EC2Endpoint
	}
	if strings.HasPrefix(e, "https://") {
		return e
	}
	return ""
}
