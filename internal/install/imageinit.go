package install

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// marker ends every line spotroot install adds to the image config file, so
// that --uninstall removes exactly those lines and nothing of the operator's.
const marker = "# added by spotroot install"

// EditImageInit records image_init: value under the spotroot key of an
// image config file (add), or removes the lines a previous add wrote. It
// reads the file as YAML: comments (the shipped, fully commented example)
// are not configuration, and a file that already sets the same image_init
// needs no change. It reports whether the content changed.
func EditImageInit(b []byte, value string, add bool) ([]byte, bool, error) {
	lines := strings.Split(string(b), "\n")
	if !add {
		var out []string
		changed := false
		for _, l := range lines {
			if strings.HasSuffix(strings.TrimRight(l, " "), marker) {
				changed = true
				continue
			}
			out = append(out, l)
		}
		return []byte(strings.Join(out, "\n")), changed, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, false, fmt.Errorf("not valid YAML (%v): fix it, then run spotroot install again", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	appendBlock := func() []byte {
		s := string(b)
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += "spotroot: " + marker + "\n  image_init: " + value + " " + marker + "\n"
		return []byte(s)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null" {
		return appendBlock(), true, nil // empty, or comments only
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, false, fmt.Errorf("line %d: the file must be a mapping with a spotroot key", top.Line)
	}
	var key, sec *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "spotroot" {
			key, sec = top.Content[i], top.Content[i+1]
		}
	}
	if key == nil {
		return appendBlock(), true, nil
	}
	insertAt := key.Line // after the key's line
	indent := key.Column - 1 + 2
	switch {
	case sec.Kind == yaml.ScalarNode && sec.Tag == "!!null" && strings.TrimSpace(strings.SplitN(lines[key.Line-1], "#", 2)[0]) == "spotroot:":
	case sec.Kind == yaml.MappingNode && sec.Style&yaml.FlowStyle == 0:
		for i := 0; i+1 < len(sec.Content); i += 2 {
			k, v := sec.Content[i], sec.Content[i+1]
			if k.Value != "image_init" {
				continue
			}
			if v.Value == value {
				return b, false, nil // already what we would write
			}
			return nil, false, fmt.Errorf("line %d: spotroot.image_init is %q, but this install needs %q: change or remove that line", k.Line, v.Value, value)
		}
		if len(sec.Content) > 0 {
			indent = sec.Content[0].Column - 1
		}
	default:
		return nil, false, fmt.Errorf("line %d: spotroot: is not a block mapping spotroot install can edit: add \"image_init: %s\" under it by hand", key.Line, value)
	}
	line := strings.Repeat(" ", indent) + "image_init: " + value + " " + marker
	out := append([]string{}, lines[:insertAt]...)
	out = append(out, line)
	out = append(out, lines[insertAt:]...)
	nb := []byte(strings.Join(out, "\n"))
	// The result must still parse, to the same configuration plus image_init.
	var check struct {
		S map[string]any `yaml:"spotroot"`
	}
	if err := yaml.Unmarshal(nb, &check); err != nil || check.S["image_init"] != value {
		return nil, false, fmt.Errorf("line %d: cannot add image_init under spotroot: safely (%v): add \"image_init: %s\" by hand", key.Line, err, value)
	}
	return nb, true, nil
}
