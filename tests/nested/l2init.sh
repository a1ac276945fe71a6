#!/bin/busybox sh
# PID 1 of L2 (booted by viommu-vmm behind the emulated IOMMU), built by run.sh: prints the
# IOMMU driver's probe lines, loads VFIO (dma_entry_limit from nested.limit=), binds the edu
# device to vfio-pci, runs /l2test, prints the IOMMU fault lines of dmesg and powers off
# (ACPI S5, which ends the VMM).
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
	echo "L2-TEST-RESULT FAIL $*"
	poweroff -f
}
echo "L2-INIT kernel=$(uname -r) uptime=$(up)s"
dmesg | grep -iE 'DMAR|IOMMU|AMD-Vi|ivhd|remapping' | grep -v 'Command line' | head -32 | sed 's/^/L2-PROBE /'
dmesg | grep -E 'DMAR-IR|AMD-Vi: Interrupt remapping|x2apic' | head -8 | sed 's/^/L2-IR /'
echo "L2-IOMMU class=$(ls /sys/class/iommu 2>/dev/null | tr '\n' ' ')groups=$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)"
for d in /sys/bus/pci/devices/*; do
	echo "L2-PCI ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") class=$(cat "$d/class") group=$(readlink "$d/iommu_group" | sed 's,.*/,,')"
done
LIMIT=$(arg nested.limit)
UNSAFE=""
# allow_unsafe_interrupts only with intremap=off (the VMM's in-kernel irqchip mode): without
# interrupt remapping type1 refuses containers unless told to.
grep -qw intremap=off /proc/cmdline && UNSAFE="allow_unsafe_interrupts=1"
for m in $(cat /modules.load); do
	p=""
	[ "$m" = vfio_iommu_type1 ] && p="$UNSAFE ${LIMIT:+dma_entry_limit=$LIMIT}"
	insmod "/lib/modules/$m.ko" $p || fail "insmod $m $p failed"
done
echo "L2-VFIO-UNSAFE-INTERRUPTS $(cat /sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts)"
BDF=""
for d in /sys/bus/pci/devices/*; do
	[ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ] && BDF=${d##*/}
done
[ -n "$BDF" ] || fail "no edu device (1234:11e8) on L2's PCI bus"
[ -e "/sys/bus/pci/devices/$BDF/iommu_group" ] || fail "$BDF has no IOMMU group: the IOMMU driver did not take it"
GROUP=$(readlink "/sys/bus/pci/devices/$BDF/iommu_group" | sed 's,.*/,,')
echo vfio-pci >"/sys/bus/pci/devices/$BDF/driver_override"
echo "$BDF" >/sys/bus/pci/drivers_probe
case "$(readlink "/sys/bus/pci/devices/$BDF/driver")" in
*/vfio-pci) ;;
*) fail "$BDF is not bound to vfio-pci" ;;
esac
echo "L2-VFIO-BOUND $BDF group=$GROUP uptime=$(up)s"
/l2test "$BDF" "$GROUP" "$(arg nested.pages)"
echo "L2-TEST-EXIT rc=$? uptime=$(up)s"
sleep 1
dmesg | grep -iE 'DMAR: \[|DMAR:.*fault|IO_PAGE_FAULT|AMD-Vi: Event' | head -4 | sed 's/^/L2-DMESG /'
poweroff -f
