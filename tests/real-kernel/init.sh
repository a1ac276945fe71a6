#!/bin/busybox sh
# PID 1 of the real-kernel oracle's initramfs (built by run.sh): loads the VFIO modules in
# dependency order (modules.load) with vfio_iommu_type1's dma_entry_limit taken from the kernel
# command line (insmod does not read /proc/cmdline: the kernel applies module.param= only to
# built-in code), binds the edu device to vfio-pci, runs the test binary and powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
	echo "REALKERNEL-ERROR $*"
	echo "REALKERNEL-EXIT rc=99"
	poweroff -f
}
arg() {
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1"=*) echo "${w#*=}" ;; esac
	done
}
echo "REALKERNEL-INIT kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s"

LIMIT=$(arg vfio_iommu_type1.dma_entry_limit)
IOMMU=$(arg viommu.iommu)
for m in $(cat /modules.load); do
	p=""
	[ "$m" = vfio_iommu_type1 ] && [ -n "$LIMIT" ] && p="dma_entry_limit=$LIMIT"
	insmod "/lib/modules/$m.ko" $p || fail "insmod $m $p failed"
done

BDF=""
for d in /sys/bus/pci/devices/*; do
	if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ]; then BDF=${d##*/}; fi
done
[ -n "$BDF" ] || fail "no edu device (1234:11e8) on the PCI bus"
[ -e "/sys/bus/pci/devices/$BDF/iommu_group" ] || fail "$BDF has no IOMMU group: is the vIOMMU enabled?"
echo vfio-pci >"/sys/bus/pci/devices/$BDF/driver_override"
echo "$BDF" >/sys/bus/pci/drivers_probe
case "$(readlink "/sys/bus/pci/devices/$BDF/driver")" in
*/vfio-pci) ;;
*) fail "$BDF is not bound to vfio-pci" ;;
esac
echo "REALKERNEL-INIT edu=$BDF group=$(readlink "/sys/bus/pci/devices/$BDF/iommu_group" | sed 's,.*/,,') uptime=$(cut -d' ' -f1 /proc/uptime)s"

# Keep kernel messages (IOMMU faults from the blocked DMAs) off the console while the test
# prints; they are summarised from dmesg afterwards.
echo 1 >/proc/sys/kernel/printk
/realkernel-oracle --bdf "$BDF" --iommu "$IOMMU"
rc=$?
echo "REALKERNEL-EXIT rc=$rc"
dmesg | grep -iE 'DMAR: \[|IO_PAGE_FAULT|AMD-Vi: Event' | tail -4 | sed 's/^/REALKERNEL-DMESG /'
echo "REALKERNEL-INIT done uptime=$(cut -d' ' -f1 /proc/uptime)s"
poweroff -f
