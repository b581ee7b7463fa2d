package config

import (
	"strings"
	"testing"
)

// imds: chooses how IMDS is reached; it must be known before user-data is
// read, so the image file and the command line set it.
func TestIMDSMode(t *testing.T) {
	image := []byte("spotroot:\n  imds: ipv6\n  volume: {tag: {Name: x}}\n")
	c, err := Load(image, nil, "")
	if err != nil || c.IMDS != "ipv6" {
		t.Fatalf("image file imds: %q, %v", c.IMDS, err)
	}
	c, err = Load(image, nil, "spotroot.imds=ipv4")
	if err != nil || c.IMDS != "ipv4" {
		t.Fatalf("command line must win: %q, %v", c.IMDS, err)
	}
	_, err = Load([]byte("spotroot:\n  imds: v6\n  volume: {tag: {Name: x}}\n"), nil, "")
	if err == nil || !strings.Contains(err.Error(), `spotroot.imds: "v6" is not auto, ipv4 or ipv6`) {
		t.Fatalf("bad imds value: %v", err)
	}
}
