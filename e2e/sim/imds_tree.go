package sim

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// imdsTime is the timestamp format IMDS uses in its JSON documents.
const imdsTime = "2006-01-02T15:04:05Z"

// metadataLocked builds the meta-data tree of an instance as flat paths.
func (s *Server) metadataLocked(i *Instance) map[string]string {
	w := s.World
	hostname := hostnameFor(i.PrivateIP, w.Region)
	mac := macFor(i.ID)
	root := "/dev/xvda"
	m := map[string]string{
		"ami-id":                         i.ImageID,
		"ami-launch-index":               "0",
		"ami-manifest-path":              "(unknown)",
		"block-device-mapping/ami":       root,
		"block-device-mapping/root":      root,
		"events/maintenance/history":     "[]",
		"events/maintenance/scheduled":   "[]",
		"hostname":                       hostname,
		"instance-action":                "none",
		"instance-id":                    i.ID,
		"instance-life-cycle":            i.Lifecycle,
		"instance-type":                  i.InstanceType,
		"local-hostname":                 hostname,
		"local-ipv4":                     i.PrivateIP,
		"mac":                            mac,
		"placement/availability-zone":    i.AZ,
		"placement/availability-zone-id": zoneID(i.AZ, w.Region),
		"placement/region":               w.Region,
		"profile":                        "default-hvm",
		"reservation-id":                 reservationID(i.ID),
		"security-groups":                "default",
		"services/domain":                "amazonaws.com",
		"services/partition":             "aws",
	}
	for k, d := range i.InstanceStore {
		m[fmt.Sprintf("block-device-mapping/ephemeral%d", k)] = strings.TrimPrefix(d, "/dev/")
	}
	nic := "network/interfaces/macs/" + mac + "/"
	m[nic+"device-number"] = "0"
	m[nic+"interface-id"] = "eni-" + derivedHex(i.ID, "eni", 17)
	m[nic+"local-hostname"] = hostname
	m[nic+"local-ipv4s"] = i.PrivateIP
	m[nic+"mac"] = mac
	m[nic+"owner-id"] = w.AccountID

	if i.Role != "" {
		w.rotateCredentialsLocked(i, time.Now())
		c := i.Credentials
		m["iam/info"] = prettyJSON(
			"Code", "Success",
			"LastUpdated", c.Issued.UTC().Format(imdsTime),
			"InstanceProfileArn", fmt.Sprintf("arn:aws:iam::%s:instance-profile/%s", w.AccountID, i.Role),
			"InstanceProfileId", "AIPA"+strings.ToUpper(derivedHex(i.ID, "profile", 17)),
		)
		// The key pair is stable per instance; advertising a moving
		// expiry keeps SDK refresh logic exercised without rotating it.
		exp := s.now().UTC().Add(6 * time.Hour).Truncate(time.Second)
		if !c.Expires.IsZero() {
			exp = c.Expires.UTC().Truncate(time.Second) // hostile: real expiry, real rotation
		}
		m["iam/security-credentials/"+i.Role] = prettyJSON(
			"Code", "Success",
			"LastUpdated", c.Issued.UTC().Format(imdsTime),
			"Type", "AWS-HMAC",
			"AccessKeyId", c.AccessKeyID,
			"SecretAccessKey", c.SecretAccessKey,
			"Token", c.Token,
			"Expiration", exp.Format(imdsTime),
		)
	}
	if a := i.SpotAction; a != nil {
		at := a.Time.UTC().Format(imdsTime)
		m["spot/instance-action"] = fmt.Sprintf(`{"action": %q, "time": %q}`, a.Action, at)
		m["spot/termination-time"] = at
	}
	if i.Rebalance != nil {
		m["events/recommendations/rebalance"] = fmt.Sprintf(`{"noticeTime": %q}`, i.Rebalance.UTC().Format(imdsTime))
	}
	// Plain text, no JSON: "The target lifecycle state of the instance"
	// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/retrieving-target-lifecycle-state-through-imds.html);
	// the node termination handler acts on "Terminated"
	// (aws/aws-node-termination-handler pkg/monitor/asglifecycle).
	if i.TargetLifecycleState != "" {
		m["autoscaling/target-lifecycle-state"] = i.TargetLifecycleState
	}
	return m
}

// dynamicLocked builds the dynamic tree: the instance identity document,
// field for field (and in the order) EC2 writes it.
func (s *Server) dynamicLocked(i *Instance) map[string]string {
	w := s.World
	return map[string]string{
		"instance-identity/document": prettyJSON(
			"accountId", w.AccountID,
			"architecture", "x86_64",
			"availabilityZone", i.AZ,
			"billingProducts", nil,
			"devpayProductCodes", nil,
			"marketplaceProductCodes", nil,
			"imageId", i.ImageID,
			"instanceId", i.ID,
			"instanceType", i.InstanceType,
			"kernelId", nil,
			"pendingTime", i.LaunchTime.UTC().Format(imdsTime),
			"privateIp", i.PrivateIP,
			"ramdiskId", nil,
			"region", w.Region,
			"version", "2017-09-30",
		),
	}
}

// prettyJSON writes key/value pairs in IMDS's layout: two-space indent and
// " : " separators, keys in the given order.
func prettyJSON(kv ...any) string {
	var b strings.Builder
	b.WriteString("{\n")
	for k := 0; k+1 < len(kv); k += 2 {
		key, _ := json.Marshal(kv[k])
		val, _ := json.Marshal(kv[k+1])
		fmt.Fprintf(&b, "  %s : %s", key, val)
		if k+2 < len(kv) {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}")
	return b.String()
}

// hostnameFor gives EC2's private DNS name for an address.
func hostnameFor(ip, region string) string {
	domain := region + ".compute.internal"
	if region == "us-east-1" {
		domain = "ec2.internal"
	}
	return "ip-" + strings.ReplaceAll(ip, ".", "-") + "." + domain
}

// zoneID maps us-east-1a to use1-az1, the shape of EC2's zone ids.
func zoneID(az, region string) string {
	parts := strings.Split(region, "-")
	var abbr strings.Builder
	for k, p := range parts {
		if k == 0 || k == len(parts)-1 {
			abbr.WriteString(p)
		} else if p != "" {
			abbr.WriteByte(p[0])
		}
	}
	letter := strings.TrimPrefix(az, region)
	n := 1
	if len(letter) == 1 {
		n = int(letter[0]-'a') + 1
	}
	return fmt.Sprintf("%s-az%d", abbr.String(), n)
}

func macFor(instanceID string) string {
	h := derivedHex(instanceID, "mac", 10)
	return "0e:" + h[0:2] + ":" + h[2:4] + ":" + h[4:6] + ":" + h[6:8] + ":" + h[8:10]
}

func reservationID(instanceID string) string {
	return "r-" + derivedHex(instanceID, "reservation", 17)
}
