#!/bin/busybox sh
# PID 1 of L1 (the QEMU TCG guest with emulated AMD SVM), built by run.sh: loads kvm_amd and
# its dependencies (modules.load), then runs viommu-vmm on L1's /dev/kvm to boot L2 (the same
# Debian kernel) behind the emulated IOMMU named by nested.iommu=, and powers off.
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
for m in $(cat /modules.load); do
	insmod "/lib/modules/$m.ko" || fail "insmod $m failed"
done
[ -e /dev/kvm ] || fail "kvm_amd loaded but there is no /dev/kvm: $(dmesg | grep -iE 'kvm|svm' | tail -3)"
echo "L1-KVM ok nested=$(cat /sys/module/kvm_amd/parameters/nested) npt=$(cat /sys/module/kvm_amd/parameters/npt) uptime=$(up)s"

IOMMU=$(arg nested.iommu)
case "$IOMMU" in
vtd) APP="intel_iommu=on" ;;
amd-vi) APP="" ;; # amd_iommu probes whenever there is an IVRS
*) fail "nested.iommu must be vtd or amd-vi, not '$IOMMU'" ;;
esac
# intremap=off: interrupt remapping is not modelled yet (only the register handshake).
L2CMD="console=ttyS0 quiet panic=-1 intremap=off $APP nested.limit=$(arg nested.limit) nested.pages=$(arg nested.pages)"
echo "L1-VMM-START iommu=$IOMMU host_limit=$(arg nested.host_limit) uptime=$(up)s"
/viommu-vmm --kernel /l2/vmlinuz --initrd /l2/initrd.cpio.gz --mem 512 --iommu "$IOMMU" \
	--host sim --host-limit "$(arg nested.host_limit)" --cmdline "$L2CMD" </dev/null
echo "L1-VMM-EXIT rc=$? uptime=$(up)s"
poweroff -f
