#!/bin/sh
# The Packer template's provisioning (spotroot.pkr.hcl runs this script on
# the build instance, as root). The test suite runs the same file against
# a Debian root (packaging/provision_test.go).
#
# Relies on these spotroot commands: `spotroot config check` (reads the
# image config file), `spotroot install` (diverts /sbin/init to
# /sbin/init.real with dpkg-divert and links /sbin/init to spotroot) and
# `spotroot status` is what to run on an instance made from the image.
#
#   DEB=/tmp/spotroot.deb VOLUME_TAG=home-root sh provision.sh
set -eu

deb=${DEB:-/tmp/spotroot.deb}
volume_tag=${VOLUME_TAG:-home-root}

# 1. The package: the binary, the watcher's unit (enabled for the next
#    boot), hooks.d, the man page. It never touches /sbin/init itself.
DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb"

# 2. The image's defaults; each instance's user-data overrides them.
mkdir -p /etc/spotroot
cat > /etc/spotroot/config.yaml <<CONFIG
# Baked into the image by Packer; user-data and the kernel command line override it.
spotroot:
  volume:
    tag: {Name: ${volume_tag}}
CONFIG
spotroot config check /etc/spotroot/config.yaml

# 3. spotroot becomes /sbin/init; the distribution's init stays as
#    /sbin/init.real for the fallback (recorded as image_init).
spotroot install
spotroot config check /etc/spotroot/config.yaml

# 4. Every launch from the image is a first boot for cloud-init.
if command -v cloud-init >/dev/null 2>&1; then
	cloud-init clean --logs
fi
