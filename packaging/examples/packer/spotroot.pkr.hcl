# Packer template: a Debian AMI with spotroot installed as /sbin/init.
#
#   packer init . && packer build -var deb=build/spotroot_<version>_amd64.deb .
#
# The package is uploaded and installed by provision.sh, which relies on
# `spotroot config check` and `spotroot install` (the package itself never
# makes spotroot the init). Instances from the image claim their volume
# with user-data from `spotroot userdata` and report with `spotroot status`.
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
}

build {
  sources = ["source.amazon-ebs.spotroot"]

  provisioner "file" {
    source      = var.deb
    destination = "/tmp/spotroot.deb"
  }

  # The provisioning is a script (provision.sh, next to this file) so that
  # the test suite runs exactly these steps against a Debian root.
  provisioner "shell" {
    script          = "${path.root}/provision.sh"
    execute_command = "sudo env DEB=/tmp/spotroot.deb VOLUME_TAG=${var.volume_tag} sh '{{ .Path }}'"
  }
}
