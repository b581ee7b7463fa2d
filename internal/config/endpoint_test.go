package config

import (
	"strings"
	"testing"
)

// Whoever can change user-data must not be able to send the instance's
// EC2 calls to a plain-HTTP server: http:// only from the kernel command
// line or the image's config file (docs/security.md).
func TestEndpointHTTPSOnlyFromUserData(t *testing.T) {
	ud := func(ep string) []byte {
		return []byte("#cloud-config\nspotroot:\n  volume: {tag: {Name: home}}\n  ec2_endpoint: " + ep + "\n")
	}
	if _, err := Load(nil, ud("http://169.254.169.250"), ""); err == nil || !strings.Contains(err.Error(), "user-data may only name an https:// endpoint") {
		t.Errorf("http:// from user-data: %v", err)
	}
	mime := []byte("Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n--B\nContent-Type: text/x-spotroot\n\nvolume: {tag: {Name: home}}\nec2_endpoint: http://10.0.0.1\n--B--\n")
	if _, err := Load(nil, mime, ""); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Errorf("http:// from a MIME part: %v", err)
	}
	if c, err := Load(nil, ud("https://ec2.us-east-1.amazonaws.com"), ""); err != nil || c.EC2Endpoint != "https://ec2.us-east-1.amazonaws.com" {
		t.Errorf("https:// from user-data: %+v %v", c, err)
	}
	if c, err := Load(nil, ud("https://ec2.us-east-1.amazonaws.com"), "spotroot.ec2_endpoint=http://169.254.169.250"); err != nil || c.EC2Endpoint != "http://169.254.169.250" {
		t.Errorf("http:// from the kernel command line: %+v %v", c, err)
	}
	image := []byte("spotroot:\n  volume: {tag: {Name: home}}\n  ec2_endpoint: http://169.254.169.250\n")
	if c, err := Load(image, nil, ""); err != nil || c.EC2Endpoint != "http://169.254.169.250" {
		t.Errorf("http:// from the image config: %+v %v", c, err)
	}
}
