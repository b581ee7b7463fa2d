#!/usr/bin/env bash
# Builds the spotroot Debian package with dpkg-deb, reproducibly: file
# times are clamped to SOURCE_DATE_EPOCH (default: the last commit), owners
# are root, gzip carries no names or times.
#
#   packaging/deb/build.sh BIN ARCH VERSION OUTDIR
#
# The watcher's unit is packaging/systemd/spotroot-watch.service (or
# $SPOTROOT_UNIT); when it is not there the package is built without it.
# The initramfs builder is $SPOTROOT_INITRAMFS_BIN, else built here.
set -euo pipefail

bin=$1 arch=$2 version=$3 outdir=$4
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
unit=${SPOTROOT_UNIT:-$top/packaging/systemd/spotroot-watch.service}
: "${SOURCE_DATE_EPOCH:=$(git -C "$top" log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
umask 022
# mktemp -d is 0700: that would be the mode of the package's "./".
chmod 0755 "$stage"
d() { install -d -m 0755 "$stage/$1"; }
f() { install -D -m "$1" "$2" "$stage/$3"; }

f 0755 "$bin" usr/sbin/spotroot
initramfs_bin=${SPOTROOT_INITRAMFS_BIN:-}
if [ -z "$initramfs_bin" ]; then
	tmpbin=$(mktemp -d)
	trap 'rm -rf "$stage" "$tmpbin"' EXIT
	initramfs_bin=$tmpbin/spotroot-initramfs
	(cd "$top" && CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -trimpath -ldflags='-s -w' -o "$initramfs_bin" ./initramfs/cmd/spotroot-initramfs)
fi
f 0755 "$initramfs_bin" usr/bin/spotroot-initramfs
# /etc/spotroot/config.yaml is not shipped: an image's configuration is
# written by `spotroot install` and the operator (cloud-init write_files
# before the package is installed must not meet a conffile prompt). The
# commented example is documentation.
d etc/spotroot
d etc/spotroot/hooks.d
f 0644 "$top/packaging/default/spotroot-watch" etc/default/spotroot-watch
f 0644 "$top/packaging/completion/spotroot" usr/share/bash-completion/completions/spotroot
doc=usr/share/doc/spotroot
ex=$doc/examples
f 0644 "$top/packaging/config.yaml.example" $ex/config.yaml
f 0644 "$top/packaging/examples/hooks/50-webhook" $ex/hooks/50-webhook
f 0644 "$top/packaging/examples/cloud-init-bake.yaml" $ex/cloud-init-bake.yaml
f 0644 "$top/packaging/examples/packer/spotroot.pkr.hcl" $ex/packer/spotroot.pkr.hcl
f 0644 "$top/packaging/examples/packer/provision.sh" $ex/packer/provision.sh
f 0644 "$top/packaging/examples/asg/launch-template.json" $ex/asg/launch-template.json
f 0644 "$top/packaging/examples/asg/pool-user-data.yaml" $ex/asg/pool-user-data.yaml
f 0644 "$top/README.md" $doc/README.md
f 0644 "$top/initramfs/README.md" $doc/README.initramfs.md
cat "$here/copyright.head" > "$stage/$doc/copyright.tmp"
install -m 0644 "$stage/$doc/copyright.tmp" "$stage/$doc/copyright" && rm "$stage/$doc/copyright.tmp"
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'spotroot (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- spotroot maintainers <maintainers@spotroot.invalid>  %s\n' \
	"$version" "$commit" "$date" | gzip -9n > "$stage/$doc/changelog.gz"
chmod 0644 "$stage/$doc/changelog.gz"
install -d -m 0755 "$stage/usr/share/man/man8"
gzip -9n < "$here/spotroot.8" > "$stage/usr/share/man/man8/spotroot.8.gz"
chmod 0644 "$stage/usr/share/man/man8/spotroot.8.gz"
install -d -m 0755 "$stage/usr/share/man/man1"
gzip -9n < "$here/spotroot-initramfs.1" > "$stage/usr/share/man/man1/spotroot-initramfs.1.gz"
chmod 0644 "$stage/usr/share/man/man1/spotroot-initramfs.1.gz"
f 0644 "$here/lintian-overrides" usr/share/lintian/overrides/spotroot
# The initramfs integrations, for operators to enable (see README.initramfs.md).
share=usr/share/spotroot/initramfs
f 0755 "$top/initramfs/dracut/99spotroot/module-setup.sh" $share/dracut/99spotroot/module-setup.sh
f 0755 "$top/initramfs/initramfs-tools/hooks/spotroot" $share/initramfs-tools/hooks/spotroot
f 0755 "$top/initramfs/initramfs-tools/scripts/init-top/spotroot" $share/initramfs-tools/scripts/init-top/spotroot

systemd=""
if [ -f "$unit" ]; then
	f 0644 "$unit" usr/lib/systemd/system/spotroot-watch.service
	systemd=yes
else
	echo "deb: note: $unit not present yet; building without the watcher's unit" >&2
fi

install -d -m 0755 "$stage/DEBIAN"
for s in postinst prerm postrm; do
	snippet=""
	if [ -n "$systemd" ]; then
		snippet=$(cat "$here/$s.systemd")
	elif [ "$s" = postrm ]; then
		continue # nothing to do without the unit (prerm guards /sbin/init)
	fi
	awk -v snip="$snippet" '$0 == "#SYSTEMD#" { if (snip != "") print snip; next } { print }' "$here/$s" > "$stage/DEBIAN/$s"
	chmod 0755 "$stage/DEBIAN/$s"
done
echo /etc/default/spotroot-watch > "$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" "$here/control.in" > "$stage/DEBIAN/control"
chmod 0644 "$stage/DEBIAN/control"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$outdir"
out="$outdir/spotroot_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out"
