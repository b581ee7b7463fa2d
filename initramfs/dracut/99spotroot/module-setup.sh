#!/bin/bash
# dracut module "spotroot": makes spotroot the /init of a dracut initramfs.
#
# spotroot claims the instance's persistent EBS volume, mounts it and
# switches root into it before anything else runs. dracut's own /init is
# kept as /init.real: when no volume is configured or the claim fails,
# spotroot execs it and the boot continues exactly as without spotroot
# (root=, LVM, LUKS, systemd in the initrd, ...).
#
# Opt-in only (check returns 255): dracut --add spotroot, or
#   add_dracutmodules+=" spotroot "   in /etc/dracut.conf.d/spotroot.conf
# The binary is /usr/sbin/spotroot, or $SPOTROOT_BIN when set.

check() {
	[ -x "${SPOTROOT_BIN:-/usr/sbin/spotroot}" ] || return 1
	return 255
}

depends() {
	return 0
}

installkernel() {
	# NIC, disk and filesystem drivers spotroot may need before any root is
	# mounted; built-in or absent ones are skipped by instmods -o.
	hostonly='' instmods -o virtio_pci virtio_net ena xen-netfront \
		nvme virtio_blk xen-blkfront ext4 xfs btrfs
}

install() {
	local bin="${SPOTROOT_BIN:-/usr/sbin/spotroot}"
	inst_simple "$bin" /usr/sbin/spotroot
	# A kernel that cannot decompress its .ko.xz/.ko.zst modules itself has
	# spotroot unpack them with xz or zstd (the PID 1 build carries no
	# decompressor): bring them along when the root has them.
	inst_multiple -o xz zstd
	if [ -f "${dracutsysrootdir-}/etc/spotroot/config.yaml" ]; then
		inst_simple /etc/spotroot/config.yaml
	fi
	# The root's CA bundle (the paths crypto/x509 reads, in its order),
	# where spotroot looks first: it verifies EC2's TLS certificate before
	# the root is mounted.
	local ca
	for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt \
		/etc/ssl/ca-bundle.pem /etc/pki/tls/cacert.pem \
		/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem /etc/ssl/cert.pem; do
		if [ -f "${dracutsysrootdir-}$ca" ]; then
			mkdir -p "${initdir}/etc/ssl/certs"
			cp -L "${dracutsysrootdir-}$ca" "${initdir}/etc/ssl/certs/ca-certificates.crt"
			break
		fi
	done
	if [ ! -f "${initdir}/etc/ssl/certs/ca-certificates.crt" ]; then
		dwarning "spotroot: no CA bundle (install ca-certificates): spotroot cannot verify EC2 from this initramfs"
	fi
	# 99spotroot installs after 99base and the systemd modules, which made
	# /init: keep theirs as /init.real and put spotroot in its place.
	if [ -e "${initdir}/init" ] || [ -L "${initdir}/init" ]; then
		mv -f "${initdir}/init" "${initdir}/init.real"
	fi
	inst_simple "$bin" /init
}
