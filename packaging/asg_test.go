package packaging_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"

	"github.com/spotroot/spotroot/internal/config"
	"github.com/spotroot/spotroot/internal/iampolicy"
)

// The Auto Scaling example is split into the files each API call takes:
// its launch template carries the pool user-data and no
// InstanceMarketOptions (Spot comes from the group's MixedInstancesPolicy),
// and its IAM policy is exactly what `spotroot iam-policy --config` prints.
func TestAutoScalingExample(t *testing.T) {
	read := func(f string) []byte {
		b, err := os.ReadFile("examples/asg/" + f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ud := read("pool-user-data.yaml")
	cfg, err := config.Load(nil, ud, "")
	if err != nil {
		t.Fatal(err)
	}
	want, err := iampolicy.Render(iampolicy.ForConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if got := read("iam-policy.json"); !bytes.Equal(got, want) {
		t.Errorf("iam-policy.json is not what spotroot iam-policy --config pool-user-data.yaml prints:\n%s", want)
	}

	var lt struct {
		LaunchTemplateName string
		LaunchTemplateData map[string]json.RawMessage
	}
	dec := json.NewDecoder(bytes.NewReader(read("launch-template.json")))
	if err := dec.Decode(&lt); err != nil {
		t.Fatal(err)
	}
	if _, spot := lt.LaunchTemplateData["InstanceMarketOptions"]; spot {
		t.Error("launch-template.json sets InstanceMarketOptions, which a group with a MixedInstancesPolicy rejects")
	}
	var b64 string
	json.Unmarshal(lt.LaunchTemplateData["UserData"], &b64)
	if got, _ := base64.StdEncoding.DecodeString(b64); !bytes.Equal(got, ud) {
		t.Error("launch-template.json's UserData is not base64 of pool-user-data.yaml")
	}

	var asg struct {
		MinSize, MaxSize, DesiredCapacity int
		VPCZoneIdentifier                 string
		MixedInstancesPolicy              struct {
			LaunchTemplate struct {
				LaunchTemplateSpecification struct{ LaunchTemplateName, Version string }
				Overrides                   []struct{ InstanceType string }
			}
			InstancesDistribution struct {
				OnDemandBaseCapacity                *int
				OnDemandPercentageAboveBaseCapacity *int
				SpotAllocationStrategy              string
			}
		}
	}
	// Only parameters CreateAutoScalingGroup knows (the ones modelled here,
	// plus the name and tags).
	var raw map[string]json.RawMessage
	json.Unmarshal(read("auto-scaling-group.json"), &raw)
	delete(raw, "AutoScalingGroupName")
	delete(raw, "Tags")
	rb, _ := json.Marshal(raw)
	dec = json.NewDecoder(bytes.NewReader(rb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&asg); err != nil {
		t.Fatalf("auto-scaling-group.json: %v", err)
	}
	d := asg.MixedInstancesPolicy.InstancesDistribution
	if asg.MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.LaunchTemplateName != lt.LaunchTemplateName ||
		d.OnDemandPercentageAboveBaseCapacity == nil || *d.OnDemandPercentageAboveBaseCapacity != 0 ||
		d.OnDemandBaseCapacity == nil || *d.OnDemandBaseCapacity != 0 || d.SpotAllocationStrategy == "" ||
		len(asg.MixedInstancesPolicy.LaunchTemplate.Overrides) < 2 || asg.VPCZoneIdentifier == "" {
		t.Errorf("auto-scaling-group.json: %+v", asg)
	}
}
