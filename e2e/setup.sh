#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine:
# QEMU (TCG is enough), socat for the IMDS/EC2 forwards, filesystem tools,
# kmod for depmod. The cloud kernel itself is downloaded (and cached) by the
# e2e harness with apt-get download. Idempotent and quiet when all is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-system-x86_64 || need+=(qemu-system-x86)
have qemu-system-aarch64 || need+=(qemu-system-arm) # make e2e-arm64 (Graviton)
have qemu-img || need+=(qemu-utils)   # per-VM qcow2 overlays; only a Recommends of qemu
have ip || need+=(iproute2)           # network-namespace tests of the DHCP client
have socat || need+=(socat)
have nbdkit || need+=(nbdkit)         # make bench -lazy-ami: an AMI root volume loaded block by block (e2e/qemu/lazydisk.go)
have dnsmasq || need+=(dnsmasq-base) # router advertisements + DHCPv6 of the IPv6-only tests
have depmod || need+=(kmod)
have objcopy || need+=(binutils)     # minimal module files for depmod in internal/kmod's trie test
have xz || need+=(xz-utils)          # the PID 1 build unpacks .ko.xz/.ko.zst with the root's own tools (internal/kmod)
have zstd || need+=(zstd)
have mkfs.ext4 || need+=(e2fsprogs)
have mkfs.xfs || need+=(xfsprogs)
have mkfs.btrfs || need+=(btrfs-progs)
have losetup || need+=(mount)
have unshare || need+=(util-linux)
have sfdisk || need+=(fdisk)           # an independent GPT reader for the disk-fix cut tests
have dpkg-deb || need+=(dpkg)
# the CA bundle an initramfs built here carries (make initramfs)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# initramfs integrations (initramfs/*_test.go build real images with them)
# and the package check; none of them touches the host's own boot files.
have mkinitramfs || need+=(initramfs-tools-core)
have dracut || need+=(dracut-core)
have cpio || need+=(cpio)
have lintian || need+=(lintian)
have mmdebstrap || need+=(mmdebstrap) # the Debian root of make e2e-distro

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	have sudo || { echo "setup: not root and no sudo: run as root" >&2; exit 1; }
	sudo="sudo"
fi

# The arm64 cloud kernel (make e2e-arm64) is a foreign-architecture package:
# apt-get download linux-image-cloud-arm64:arm64 needs arm64 package lists.
# Only lists are added; nothing of arm64 is installed on the host.
update=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
	echo "setup: dpkg --add-architecture arm64"
	$sudo dpkg --add-architecture arm64
	update=1
fi
# apt-get download needs package lists that know the cloud kernels.
if [ -n "$update" ] || [ ${#need[@]} -gt 0 ] || ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 ||
	! apt-cache show linux-image-cloud-arm64:arm64 >/dev/null 2>&1; then
	echo "setup: apt-get update"
	$sudo apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
	echo "setup: installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /usr/share/qemu/qboot.rom ] || echo "setup: note: qboot.rom missing, QEMU will use SeaBIOS (slower)"
