package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzUserData feeds arbitrary bytes to the user-data unwrapping (gzip,
// base64, MIME multipart, cloud-config detection): it must never panic and
// must either find a document, say "not configured", or return an error.
func FuzzUserData(f *testing.F) {
	for _, s := range []string{
		cloudConfig,
		"#!/bin/sh\necho hi\n",
		"Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\nContent-Type: text/x-spotroot\n\nvolume: {id: vol-0123456789abcdef0}\n--XX--\n",
		"Content-Type: text/x-spotroot\nContent-Transfer-Encoding: base64\n\ndm9sdW1lOiB7aWQ6IHZvbC0wMTIzNDU2Nzg5YWJjZGVmMH0K\n",
		"\x1f\x8b\x08\x00\x00\x00\x00\x00",
		"I2Nsb3VkLWNvbmZpZwpzcG90cm9vdDoK",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, ud []byte) {
		doc, err := ExtractUserData(ud)
		if err == nil && doc.YAML == nil {
			t.Fatal("no error and no document")
		}
		// Whatever was found must go through the YAML layer without panic.
		c, err := Load(nil, ud, "")
		if err == nil && !c.Configured() && !c.Disabled {
			t.Fatal("Load succeeded without a volume")
		}
		if err != nil && !errors.Is(err, ErrNotConfigured) && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

// FuzzConfigYAML fuzzes the spotroot mapping itself (strict field checking,
// line numbers, normalisation) and the kernel command line.
func FuzzConfigYAML(f *testing.F) {
	for _, s := range []string{
		"volume: {tag: {Name: home-root}}\n",
		"volumes:\n  - id: vol-0123456789abcdef0\n    mount: /home\n    create: {from: empty, size: 1}\n",
		"volume: {tag: {Env: no}}\n",
		"timeouts: {device: 3s, attach: 2m}\non_failure: poweroff\n",
		"volume: [\n",
		"init: relative\n",
	} {
		f.Add(s, "spotroot.volume=tag:Name=x spotroot.init=/sbin/init")
	}
	f.Fuzz(func(t *testing.T, mapping, cmdline string) {
		ud := "#cloud-config\nspotroot:\n" + indentLines(mapping)
		c, err := Load(nil, []byte(ud), cmdline)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for _, v := range c.Volumes {
			if !strings.HasPrefix(v.Mount, "/") {
				t.Fatalf("accepted a relative mount %q", v.Mount)
			}
		}
		if _, ok := c.Root(); !ok && len(c.Volumes) == 0 && !c.Disabled {
			t.Fatal("configured with nothing to claim")
		}
	})
}

func indentLines(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
