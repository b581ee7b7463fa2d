package distro

import (
	"regexp"
	"strings"
)

// Filesystem labels of the images; /etc/fstab on each mounts / by them.
const (
	VolumeLabel = "debian-vol" // ext4 label on the persistent volume
	AMILabel    = "debian-ami" // ext4 label of the stock image's root
	PartLabel   = "root"       // GPT partition name on the volume
)

// networkdFiles enable systemd-networkd (what `systemctl enable` would
// link) with DHCPv4 on every ethernet link: the distribution's own network
// stack takes over after spotroot tore its DHCP setup down.
func networkdFiles() []File {
	const sys = "/lib/systemd/system/"
	return []File{
		{Path: "etc/systemd/network/80-e2e-dhcp.network", Data: []byte("[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n")},
		{Path: "etc/systemd/system/multi-user.target.wants/systemd-networkd.service", Link: sys + "systemd-networkd.service"},
		{Path: "etc/systemd/system/dbus-org.freedesktop.network1.service", Link: sys + "systemd-networkd.service"},
		{Path: "etc/systemd/system/sockets.target.wants/systemd-networkd.socket", Link: sys + "systemd-networkd.socket"},
		{Path: "etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service", Link: sys + "systemd-networkd-wait-online.service"},
	}
}

// cloudCfg keeps cloud-init from rewriting apt's sources (the image has none).
var cloudCfg = File{Path: "etc/cloud/cloud.cfg.d/90-e2e.cfg", Data: []byte(`# spotroot e2e: the image carries no apt sources; leave them alone.
apt:
  preserve_sources_list: true
`)}

// StockFiles are the files of the stock Debian image (the "AMI" a build
// instance boots): networkd and cloud-init settings.
func StockFiles() []File {
	return append(networkdFiles(), cloudCfg)
}

// ReportMarker starts every line the report service prints.
const ReportMarker = "DISTRO "

// ReportDone is the report's last line; the guest powers off after it.
var ReportDone = regexp.MustCompile(`DISTRO done`)

// reportScript runs as a service on the persistent root once the boot has
// finished: it prints the state of the system as "DISTRO key=value" lines
// on the console, appends this boot's id to a file on the volume, and powers
// the machine off.
const reportScript = `#!/bin/bash
# spotroot e2e: report the booted persistent root on the console, then power off.
say() { printf 'DISTRO %s\n' "$*"; }
state=$(systemctl is-system-running --wait 2>&1)
say "state=$state"
for u in $(systemctl list-units --state=failed --no-legend --plain | awk '{print $1}'); do
	say "failed=$u"
	journalctl -b -u "$u" --no-pager -o cat -n 8 | sed 's/^/DISTRO   | /'
done
say "pid1=$(readlink /proc/1/exe)"
say "multi-user=$(systemctl is-active multi-user.target)"
say "findmnt=$(findmnt -n -o SOURCE,FSTYPE,OPTIONS /)"
say "remount=$(systemctl show -P ActiveState systemd-remount-fs.service)/$(systemctl show -P Result systemd-remount-fs.service)"
# Nothing on this root wants network-online.target, so the boot may finish
# before networkd has; wait for it like a unit after network-online would.
/lib/systemd/systemd-networkd-wait-online --timeout=120 >/dev/null 2>&1
say "wait-online=$?"
say "net=$(ip -4 -o addr show | awk '$2 != "lo" {printf "%s=%s ", $2, $4}')"
say "networkd=$(networkctl list --no-legend --no-pager 2>&1 | awk '$3 == "ether" {printf "%s:%s:%s ", $2, $4, $5}')"
say "dhcp=$(journalctl -b -u systemd-networkd --no-pager -o cat | grep -m1 'DHCPv4 address')"
# spotroot writes its timeline to /dev/kmsg as "spotroot: …"; journald
# files those under SYSLOG_IDENTIFIER=spotroot (prefix stripped).
say "timeline-journal=$(journalctl -b -t spotroot --no-pager -o cat | wc -l)"
say "timeline-journal-exec=$(journalctl -b -t spotroot --no-pager -o cat | grep -m1 '^exec ')"
say "timeline-dmesg=$(dmesg | grep -c 'spotroot: ')"
say "kmsg-suppressed=$(dmesg | grep -m1 'suppressed due to ratelimiting')"
say "timeline-file=$(grep -c '^spotroot: ' /run/spotroot/timeline.log 2>/dev/null)"
say "timeline-file-volume=$(grep -m1 '^spotroot: volume=' /run/spotroot/timeline.log 2>/dev/null)"
say "machine-id=$(cat /etc/machine-id)"
bootid=$(cat /proc/sys/kernel/random/boot_id)
say "boot-id=$bootid"
mkdir -p /var/lib/spotroot-e2e
echo "$bootid" >> /var/lib/spotroot-e2e/history
sync
say "history=$(paste -sd, /var/lib/spotroot-e2e/history)"
if [ -x /usr/bin/cloud-init ]; then
	say "cloud-init=$(cloud-init status --long 2>&1 | paste -sd ' ')"
	say "cloud-id=$(cloud-id 2>&1)"
	say "cloud-instance=$(cat /var/lib/cloud/data/instance-id 2>/dev/null)"
	say "cloud-userdata=$(head -c 300 /var/lib/cloud/instance/user-data.txt 2>/dev/null | paste -sd '|')"
	if [ -e /run/cloud-init/enabled ]; then
		say "cloud-schema=$(cloud-init schema --system 2>&1 | tail -n 1)"
	fi
	say "cloud-network=$(ls /etc/systemd/network | paste -sd ' ')"
	grep -E ' - [a-z_0-9]+\.py\[(WARNING|ERROR|CRITICAL)\]' /var/log/cloud-init.log 2>/dev/null | sed 's/^/DISTRO ci| /'
fi
say "watch=$(systemctl is-active spotroot-watch.service 2>&1)"
say done
# spotroot_e2e.stay_up on the kernel command line: stay up (e.g. for the
# Spot interruption watcher to power the machine off).
grep -qw spotroot_e2e.stay_up /proc/cmdline || systemctl poweroff --no-block
`

// StayUp is the kernel argument that keeps the report from powering off.
const StayUp = "spotroot_e2e.stay_up"

// hookScript is a spotroot watch hook: it shows the notice on the console
// and records it on the volume.
const hookScript = `#!/bin/sh
echo "HOOK kind=$SPOTROOT_KIND action=$SPOTROOT_ACTION time=$SPOTROOT_TIME deadline=$SPOTROOT_DEADLINE" > /dev/console
mkdir -p /var/lib/spotroot-e2e
echo "$SPOTROOT_KIND $SPOTROOT_ACTION $(cat /proc/sys/kernel/random/boot_id)" >> /var/lib/spotroot-e2e/hooks
sync
`

// Watcher is spotroot's interruption watcher on the persistent root.
type Watcher struct {
	Binary string // installed as /usr/sbin/spotroot
	Unit   []byte // spotroot-watch.service (packaging/systemd)
}

// VolumeFiles are the files of the persistent root: StockFiles, the report
// service and, if w is not nil, spotroot's watcher (enabled) with a hook.
func VolumeFiles(w *Watcher) []File {
	unit := `[Unit]
Description=spotroot e2e: report the booted system on the console, then power off

[Service]
Type=exec
ExecStart=/usr/local/sbin/spotroot-e2e-report
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
`
	files := append(StockFiles(),
		File{Path: "usr/local/sbin/spotroot-e2e-report", Data: []byte(reportScript), Mode: 0o755},
		File{Path: "etc/systemd/system/spotroot-e2e-report.service", Data: []byte(unit)},
		File{Path: "etc/systemd/system/multi-user.target.wants/spotroot-e2e-report.service",
			Link: "/etc/systemd/system/spotroot-e2e-report.service"},
	)
	if w != nil {
		files = append(files,
			File{Path: "usr/sbin/spotroot", Src: w.Binary, Mode: 0o755},
			File{Path: "etc/systemd/system/spotroot-watch.service", Data: w.Unit},
			File{Path: "etc/systemd/system/multi-user.target.wants/spotroot-watch.service",
				Link: "/etc/systemd/system/spotroot-watch.service"},
			File{Path: "etc/spotroot/hooks.d/50-e2e-record", Data: []byte(hookScript), Mode: 0o755},
		)
	}
	return files
}

// Report is what the report service printed.
type Report struct {
	Values map[string]string // first value of each key
	Failed []string          // failed units
	Lines  []string          // all DISTRO lines
}

// ParseReport collects the DISTRO lines of a console.
func ParseReport(console string) Report {
	r := Report{Values: map[string]string{}}
	for _, l := range strings.Split(console, "\n") {
		i := strings.Index(l, ReportMarker)
		if i < 0 {
			continue
		}
		l = strings.TrimRight(l[i:], "\r")
		r.Lines = append(r.Lines, l)
		k, v, ok := strings.Cut(strings.TrimPrefix(l, ReportMarker), "=")
		if !ok || strings.ContainsAny(k, " |") {
			continue
		}
		if k == "failed" {
			r.Failed = append(r.Failed, v)
		}
		if _, dup := r.Values[k]; !dup {
			r.Values[k] = strings.TrimSpace(v)
		}
	}
	return r
}
