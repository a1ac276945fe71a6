#!/bin/busybox sh
# PID 1 of L1 (the QEMU TCG guest with emulated AMD SVM), built by run.sh: loads kvm_amd, VFIO
# and their dependencies (modules.load), then runs viommu-vmm on L1's /dev/kvm to boot L2 (the
# same Debian kernel) behind the emulated IOMMU named by nested.iommu=, and powers off.
# nested.host=vfio: L1's own edu device (behind L0 QEMU's intel-iommu) is bound to vfio-pci
# and the VMM shadows into a real type1 container with dma_entry_limit=nested.host_limit;
# otherwise (sim) into its simulated host with that limit.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin
up() { cut -d' ' -f1 /proc/uptime; }
arg() {
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1"=*) echo "${w#*=}" ;; esac
	done
}
fail() {
	echo "L1-ERROR $*"
	poweroff -f
}
echo "L1-INIT kernel=$(uname -r) uptime=$(up)s"
grep -qw svm /proc/cpuinfo || fail "no svm flag in L1's /proc/cpuinfo (L0 QEMU must use -cpu max)"
HOST=$(arg nested.host)
HOST_LIMIT=$(arg nested.host_limit)
for m in $(cat /modules.load); do
	p=""
	[ "$m" = vfio_iommu_type1 ] && p="dma_entry_limit=$HOST_LIMIT"
	insmod "/lib/modules/$m.ko" $p || fail "insmod $m $p failed"
done
[ -e /dev/kvm ] || fail "kvm_amd loaded but there is no /dev/kvm: $(dmesg | grep -iE 'kvm|svm' | tail -3)"
echo "L1-KVM ok nested=$(cat /sys/module/kvm_amd/parameters/nested) npt=$(cat /sys/module/kvm_amd/parameters/npt) uptime=$(up)s"

IOMMU=$(arg nested.iommu)
case "$IOMMU" in
vtd) APP="intel_iommu=on" ;;
amd-vi) APP="" ;; # amd_iommu probes whenever there is an IVRS
*) fail "nested.iommu must be vtd or amd-vi, not '$IOMMU'" ;;
esac
# nested.irq=split: the VMM's IO-APIC and every interrupt remapped by the emulated IOMMU, so
# L2 runs with intremap=on (x2APIC follows); no PIT in split mode, so no_timer_check (the
# IO-APIC timer check needs one). kernel: KVM's irqchip, whose IO-APIC cannot take remappable
# entries, so intremap=off.
IRQ=$(arg nested.irq)
case "${IRQ:=kernel}" in
split) IRCMD="intremap=on no_timer_check" ;;
kernel) IRCMD="intremap=off" ;;
*) fail "nested.irq must be split or kernel, not '$IRQ'" ;;
esac
L2CMD="console=ttyS0 quiet panic=-1 $IRCMD $APP nested.limit=$(arg nested.limit) nested.pages=$(arg nested.pages)"
case "$HOST" in
vfio)
	BDF=""
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ] && BDF=${d##*/}
	done
	[ -n "$BDF" ] || fail "nested.host=vfio but L1 has no edu device (L0 QEMU needs -device edu)"
	[ -e "/sys/bus/pci/devices/$BDF/iommu_group" ] || fail "L1's $BDF has no IOMMU group (L0 QEMU needs -device intel-iommu)"
	echo vfio-pci >"/sys/bus/pci/devices/$BDF/driver_override"
	echo "$BDF" >/sys/bus/pci/drivers_probe
	case "$(readlink "/sys/bus/pci/devices/$BDF/driver")" in
	*/vfio-pci) ;;
	*) fail "L1's $BDF is not bound to vfio-pci" ;;
	esac
	HOSTARGS="--host vfio --host-device /sys/bus/pci/devices/$BDF"
	;;
sim) HOSTARGS="--host sim --host-limit $HOST_LIMIT" ;;
*) fail "nested.host must be sim or vfio, not '$HOST'" ;;
esac
echo "L1-VMM-START iommu=$IOMMU host=$HOST host_limit=$HOST_LIMIT irq=$IRQ uptime=$(up)s"
# shellcheck disable=SC2086
/viommu-vmm --kernel /l2/vmlinuz --initrd /l2/initrd.cpio.gz --mem 512 --iommu "$IOMMU" \
	--irq "$IRQ" $HOSTARGS --cmdline "$L2CMD" </dev/null
echo "L1-VMM-EXIT rc=$? uptime=$(up)s"
poweroff -f
