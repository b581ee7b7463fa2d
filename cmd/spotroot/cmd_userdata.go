package main

import (
	"fmt"

	"github.com/spotroot/spotroot/internal/ops"
)

func init() {
	register(command{name: "userdata", summary: "print the user-data that makes an instance claim a volume", run: userdataCmd})
}

const userdataUsage = `usage: spotroot userdata (--volume NAME|vol-… | --pool P) [--mount /home] [--format cloud-config|mime]

Prints the user-data for any launch tool (Terraform, CloudFormation, the
console). cloud-config (default) is a #cloud-config document with a spotroot
key, which cloud-init ignores; mime is a multipart/mixed archive with a
text/x-spotroot part, to combine with other cloud-init parts. --mount makes
the volume a data volume at that path instead of the root. Check the result
with 'spotroot config check'.
`

func userdataCmd(args []string, stdio stdio) int {
	fs := newFlags("userdata", userdataUsage, stdio)
	var o ops.UserDataOpts
	fs.StringVar(&o.Volume, "volume", "", "the volume's Name tag or vol-… id")
	fs.StringVar(&o.Pool, "pool", "", "claim any free volume of this pool")
	fs.StringVar(&o.Mount, "mount", "", "mount point of a data volume (default: the volume is the root)")
	fs.StringVar(&o.EC2Endpoint, "ec2-endpoint", "", "EC2 endpoint the instance should use (VPC endpoint)")
	format := fs.String("format", "cloud-config", "cloud-config or mime")
	if code, done := parseFlags(fs, args, stdio); done {
		return code
	}
	var b []byte
	var err error
	switch *format {
	case "cloud-config":
		b, err = ops.CloudConfig(o)
	case "mime":
		b, err = ops.MIME(o)
	default:
		err = fmt.Errorf("--format %q: use cloud-config or mime", *format)
	}
	if err != nil {
		fmt.Fprintf(stdio.err, "spotroot userdata: %v\n", err)
		return exitUsage
	}
	stdio.out.Write(b)
	return exitOK
}
