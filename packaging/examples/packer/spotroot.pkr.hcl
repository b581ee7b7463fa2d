# Packer template: a Debian AMI with spotroot installed as /sbin/init.
#
#   packer init . && packer build -var deb=build/spotroot_<version>_amd64.deb .
#
# The package is uploaded and installed; `spotroot install` then makes
# spotroot the image's init (the package itself never does).
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "deb" {
  type        = string
  description = "path of the spotroot .deb (make deb)"
}

variable "volume_tag" {
  type    = string
  default = "home-root"
}

source "amazon-ebs" "spotroot" {
  region        = var.region
  instance_type = "t3.small"
  ssh_username  = "admin"
  ami_name      = "spotroot-debian-12-{{timestamp}}"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }
  # IMDSv2 only: spotroot speaks nothing else.
  imds_support = "v2.0"
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }
  tags = {
    Name     = "spotroot-debian-12"
    spotroot = "true"
  }
  # create: {from: ami} copies this AMI's root snapshot; the instance role
  # (spotroot iam-policy --create) may only create volumes from snapshots
  # carrying the managed tag.
  snapshot_tags = {
    "spotroot:managed" = "true"
  }
}

build {
  sources = ["source.amazon-ebs.spotroot"]

  provisioner "file" {
    source      = var.deb
    destination = "/tmp/spotroot.deb"
  }

  provisioner "shell" {
    inline = [
      "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/spotroot.deb",
      "printf 'spotroot:\\n  volume:\\n    tag: {Name: ${var.volume_tag}}\\n  image_init: /sbin/init.real\\n' | sudo tee /etc/spotroot/config.yaml",
      "sudo spotroot config check /etc/spotroot/config.yaml",
      "sudo spotroot install",
      "sudo cloud-init clean --logs",
    ]
  }
}
