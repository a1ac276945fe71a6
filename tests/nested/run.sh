#!/usr/bin/env bash
# Nested real-guest test: real Linux drivers (intel-iommu / amd_iommu, VFIO) drive viommu's
# VT-d and AMD-Vi models embedded in viommu-vmm.
#
#   L0 = QEMU TCG -cpu max (emulated AMD SVM) booting the Debian kernel;
#   L1 = that guest: kvm_amd gives /dev/kvm, and the static viommu-vmm boots
#   L2 = the same Debian kernel behind the emulated IOMMU, whose /init binds the edu device to
#        vfio-pci and runs l2test.c (DMA through the vIOMMU, blocked DMA after unmap, the
#        host entry limit).
#
# usage: run.sh [--iommu vtd|amd-vi|both] [--host mixed|sim|vfio] [--limit N] [--host-limit N]
#               [--pages N] [--irq both|split|kernel] [--work DIR] [--timeout SECONDS]
#   --host        the VMM's host backend: sim (its simulated type1 host), vfio (a real type1
#                 container in L1: L0 QEMU gets an intel-iommu and an edu device, which L1
#                 binds to vfio-pci), or mixed (default: vfio for the VT-d cycle, sim for AMD-Vi)
#   --limit       L2 vfio_iommu_type1.dma_entry_limit (default 500)
#   --host-limit  entry limit of the VMM's host backend (the simulated host's, or L1's
#                 vfio_iommu_type1.dma_entry_limit; default 300: below --limit, so the shadow
#                 runs out of host entries before L2's VFIO does)
#   --pages       pages l2test tries to map one by one (default 550)
#   --irq         the VMM's irqchip: split (its own IO-APIC, every interrupt remapped by the
#                 vIOMMU, L2 with intremap=on: checks L2's remapping lines, IR-PCI-MSI and
#                 IR-IO-APIC in /proc/interrupts, the MSI, no allow_unsafe_interrupts and the
#                 VMM's remapped counts), kernel (KVM's irqchip, L2 intremap=off), or both
#                 (default: one cycle of each per IOMMU, split first)
#
# QEMU, the kernel and busybox come from tests/real-kernel/setup.sh (same cache,
# /var/tmp/viommu-real-kernel or VIOMMU_RK_WORK). The VMM is built static
# (VIOMMU_NESTED_TARGET_DIR or $WORK/target), l2test with gcc -static. For each IOMMU and irqchip mode
# it checks the serial log: L2's IOMMU probe, (split) its interrupt remapping, the DMA verification, the blocked DMA and its fault line in
# L2's dmesg, and the VMM's exit report (powered off, the one expected fault, host mappings
# zero at teardown). It never skips: anything missing is a failure naming it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${VIOMMU_RK_WORK:-/var/tmp/viommu-real-kernel}
IOMMUS=(vtd amd-vi)
LIMIT=500
HOST_LIMIT=300
PAGES=550
TIMEOUT=420
HOSTMODE=mixed
IRQS=(split kernel)

die() {
	echo "nested: FAIL: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case "$1" in
	--iommu)
		case "${2:-}" in
		vtd | amd-vi) IOMMUS=("$2") ;;
		both) IOMMUS=(vtd amd-vi) ;;
		*) die "--iommu takes vtd, amd-vi or both" ;;
		esac
		shift 2
		;;
	--host)
		case "${2:-}" in
		mixed | sim | vfio) HOSTMODE=$2 ;;
		*) die "--host takes mixed, sim or vfio" ;;
		esac
		shift 2
		;;
	--irq)
		case "${2:-}" in
		split | kernel) IRQS=("$2") ;;
		both) IRQS=(split kernel) ;;
		*) die "--irq takes both, split or kernel" ;;
		esac
		shift 2
		;;
	--limit | --host-limit | --pages | --timeout)
		[[ ${2:-} =~ ^[0-9]+$ ]] || die "$1 takes a number"
		case "$1" in
		--limit) LIMIT=$2 ;;
		--host-limit) HOST_LIMIT=$2 ;;
		--pages) PAGES=$2 ;;
		--timeout) TIMEOUT=$2 ;;
		esac
		shift 2
		;;
	--work)
		WORK=${2:?--work takes a directory}
		shift 2
		;;
	-h | --help)
		sed -n '2,30p' "$0"
		exit 0
		;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }
T_START=$(now_ms)
T_STAGE=$T_START
stage_done() {
	local now
	now=$(now_ms)
	printf 'nested: %-44s %6s s\n' "$1" "$(secs $((now - T_STAGE)))"
	T_STAGE=$now
}

# Stages 1 and 2 of the real-kernel harness: QEMU, kernel, busybox (cached), module helpers.
# shellcheck source=../real-kernel/setup.sh
source "$ROOT/tests/real-kernel/setup.sh"

# --- 3. the VMM (static) and the L2 test program (static) -----------------------------------
command -v gcc >/dev/null || die "gcc is not installed (needed to build the L2 test program)"
# Not CARGO_TARGET_DIR: under `cargo test` that directory's build lock is held by the caller.
TARGET_DIR=${VIOMMU_NESTED_TARGET_DIR:-$WORK/target}
(
	cd "$ROOT"
	RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$TARGET_DIR" \
		cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu -p viommu-vmm
) >"$WORK/logs/nested-cargo-build.log" 2>&1 || {
	tail -40 "$WORK/logs/nested-cargo-build.log" >&2
	die "building viommu-vmm failed (see $WORK/logs/nested-cargo-build.log)"
}
VMM=$TARGET_DIR/x86_64-unknown-linux-gnu/release/viommu-vmm
[ -x "$VMM" ] || die "no VMM binary at $VMM"
ldd "$VMM" 2>&1 | grep -Eq 'not a dynamic executable|statically linked' || die "$VMM is not static: $(ldd "$VMM" 2>&1 | head -3)"
L2TEST=$WORK/nested/l2test
mkdir -p "$WORK/nested"
gcc -O2 -static -Wall -o "$L2TEST" "$HERE/l2test.c" >"$WORK/logs/nested-gcc.log" 2>&1 ||
	die "gcc -static l2test.c failed (static libc missing? see $WORK/logs/nested-gcc.log): $(tail -3 "$WORK/logs/nested-gcc.log")"
stage_done "viommu-vmm + l2test (static)"

# --- 4. initramfs images --------------------------------------------------------------------
pack_modules() { # dir module...
	local dir=$1 n
	shift
	ORDER=()
	SEEN=()
	for n in "$@"; do visit "$n"; done
	mkdir -p "$dir/lib/modules"
	: >"$dir/modules.load"
	for n in "${ORDER[@]}"; do
		modcat "${MODPATH[$n]}" >"$dir/lib/modules/$n.ko"
		echo "$n" >>"$dir/modules.load"
	done
}
L2RD=$WORK/nested/l2.d
rm -rf "$L2RD" && mkdir -p "$L2RD"/{bin,dev,proc,sys,tmp}
cp "$BBROOT/bin/busybox" "$L2RD/bin/busybox"
cp "$HERE/l2init.sh" "$L2RD/init" && chmod +x "$L2RD/init"
cp "$L2TEST" "$L2RD/l2test"
pack_modules "$L2RD" vfio_pci vfio_iommu_type1
L2MODS=("${ORDER[@]}")
L1RD=$WORK/nested/l1.d
rm -rf "$L1RD" && mkdir -p "$L1RD"/{bin,dev,proc,sys,tmp,l2}
cp "$BBROOT/bin/busybox" "$L1RD/bin/busybox"
cp "$HERE/l1init.sh" "$L1RD/init" && chmod +x "$L1RD/init"
cp "$VMM" "$L1RD/viommu-vmm"
# The L2 kernel as an uncompressed ELF vmlinux when the bzImage's payload is xz or zstd:
# L2's decompressor would run under TCG (nested), the slowest part of its boot.
L2KERNEL=$WORK/nested/vmlinux
rm -f "$L2KERNEL"
for fmt in 'xz:\xFD\x37\x7A\x58\x5A\x00' 'zstd:\x28\xB5\x2F\xFD'; do
	off=$(LC_ALL=C grep -obUaP "${fmt#*:}" "$VMLINUZ" 2>/dev/null | head -1 | cut -d: -f1 || true)
	[ -n "$off" ] || continue
	case ${fmt%%:*} in
	xz) tail -c +$((off + 1)) "$VMLINUZ" | xz -dc --single-stream >"$L2KERNEL" 2>/dev/null || true ;;
	zstd) tail -c +$((off + 1)) "$VMLINUZ" | zstd -dcq >"$L2KERNEL" 2>/dev/null || true ;;
	esac
	[ "$(head -c 4 "$L2KERNEL" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ] && break
	rm -f "$L2KERNEL"
done
if [ -e "$L2KERNEL" ]; then
	L2KIND="vmlinux (ELF, $(($(stat -c %s "$L2KERNEL") >> 20)) MiB)"
	# L0 QEMU boots it too (PVH entry), skipping L1's decompression under TCG.
	L1KERNEL=$L2KERNEL
else
	L2KERNEL=$VMLINUZ
	L1KERNEL=$VMLINUZ
	L2KIND="bzImage (payload neither xz nor zstd: decompressed by L2 itself)"
fi
cp "$L2KERNEL" "$L1RD/l2/vmlinuz"
(cd "$L2RD" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -6 >"$L1RD/l2/initrd.cpio.gz") ||
	die "cannot pack the L2 initramfs"
pack_modules "$L1RD" kvm_amd vfio_pci vfio_iommu_type1
# Uncompressed: decompressing under TCG costs more than reading the larger image.
L1CPIO=$WORK/nested/l1.cpio
(cd "$L1RD" && find . | cpio -o -H newc --quiet -R 0:0 >"$L1CPIO") || die "cannot pack the L1 initramfs"
stage_done "initramfs (L1: ${ORDER[*]}; L2: ${L2MODS[*]}; L2 kernel $L2KIND)"

# --- 5. one nested cycle per IOMMU ------------------------------------------------------------
status=0
PASSED=0
FAILED=0
check() { # log description extended-regex
	if grep -aEq "$3" "$1"; then
		PASSED=$((PASSED + 1))
	else
		why+=("$2")
	fi
}
# Prefixes every serial line with the host seconds since $1 (ms) and strips CRs, so the log
# shows where a cycle's time goes whatever the guests' clocks say.
stamp() {
	local line
	while IFS= read -r line; do
		printf '[%7s] %s\n' "$(secs $(($(now_ms) - $1)))" "${line%$'\r'}"
	done
}
report_value() { # key
	sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$report" | head -1
}
CYCLES=()
for iommu in "${IOMMUS[@]}"; do
	for irq in "${IRQS[@]}"; do CYCLES+=("$iommu:$irq"); done
done
for c in "${CYCLES[@]}"; do
	iommu=${c%%:*}
	irq=${c#*:}
	log=$WORK/logs/nested-$iommu-$irq.serial.log
	qlog=$WORK/logs/nested-$iommu-$irq.qemu.log
	host=$HOSTMODE
	[ "$host" = mixed ] && { [ "$iommu" = vtd ] && host=vfio || host=sim; }
	l0dev=(-machine q35)
	l1app=""
	if [ "$host" = vfio ]; then
		# L1 gets an IOMMU and an edu device of its own for the VMM's real VFIO container.
		l0dev=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on -device edu)
		# no_timer_check: L1's IO-APIC timer check (through QEMU's remapped IO-APIC) counts
		# ticks against a delay loop, which TCG on a loaded host can miss ("timer doesn't
		# work through Interrupt-remapped IO-APIC" panics); L1 has kvm-clock and the LAPIC
		# timer anyway.
		l1app="intel_iommu=on no_timer_check"
	fi
	rc=0
	t0=$(now_ms)
	nice -n 5 timeout --kill-after=10 "$TIMEOUT" "$QEMU" "${QEMU_ARGS[@]}" -nodefaults -no-user-config \
		-display none -accel tcg "${l0dev[@]}" -cpu max -smp 1 -m 2G \
		-kernel "$L1KERNEL" -initrd "$L1CPIO" \
		-append "console=ttyS0 panic=-1 quiet $l1app nested.iommu=$iommu nested.irq=$irq nested.host=$host nested.limit=$LIMIT nested.host_limit=$HOST_LIMIT nested.pages=$PAGES" \
		-serial stdio -no-reboot </dev/null 2>"$qlog" | stamp "$t0" >"$log" || rc=$?
	cycle=$(secs $(($(now_ms) - t0)))
	echo "---- $iommu (host backend: $host, irqchip: $irq): serial log excerpts ----"
	grep -aE '^\[ *[0-9.]+\] (L1-|L2-|VMM-|viommu-vmm:)' "$log" | grep -avE '\] L2-PCI' || true
	why=()
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		why+=("QEMU did not finish within $TIMEOUT s")
	elif [ "$rc" != 0 ]; then
		why+=("L0 QEMU exited with $rc (see $qlog)")
	fi
	grep -aq 'Kernel panic' "$log" && why+=("kernel panic: $(grep -a -m1 'Kernel panic' "$log")")
	grep -aEq '^\[ *[0-9.]+\] L1-ERROR' "$log" && why+=("L1: $(grep -aE -m1 '^\[ *[0-9.]+\] L1-ERROR' "$log")")
	grep -aEq '^\[ *[0-9.]+\] VMM-ERROR' "$log" && why+=("viommu-vmm: $(grep -aE -m1 '^\[ *[0-9.]+\] VMM-ERROR' "$log")")
	check "$log" "L1 never got /dev/kvm from kvm_amd" '^\[ *[0-9.]+\] L1-KVM ok'
	check "$log" "L2 never reached its /init (boot by viommu-vmm failed)" '^\[ *[0-9.]+\] L2-INIT '
	case $iommu in
	vtd)
		check "$log" "L2's intel-iommu driver did not probe the DMAR unit" '^\[ *[0-9.]+\] L2-PROBE .*DMAR: dmar0: reg_base_addr'
		check "$log" "no dmar0 in L2's /sys/class/iommu" '^\[ *[0-9.]+\] L2-IOMMU class=.*dmar0'
		check "$log" "L2's dmesg has no DMAR fault line for the blocked DMA" '^\[ *[0-9.]+\] L2-DMESG .*DMAR: \[DMA Write'
		;;
	amd-vi)
		check "$log" "L2's amd_iommu driver did not probe the IVHD" '^\[ *[0-9.]+\] L2-PROBE .*AMD-Vi'
		check "$log" "no ivhd0 in L2's /sys/class/iommu" '^\[ *[0-9.]+\] L2-IOMMU class=.*ivhd0'
		check "$log" "L2's dmesg has no IO_PAGE_FAULT line for the blocked DMA" '^\[ *[0-9.]+\] L2-DMESG .*IO_PAGE_FAULT'
		;;
	esac
	check "$log" "edu DMA through the vIOMMU did not verify" '^\[ *[0-9.]+\] L2-DMA-VERIFY OK'
	check "$log" "DMA to an unmapped IOVA was not blocked" '^\[ *[0-9.]+\] L2-UNMAPPED-DMA BLOCKED'
	check "$log" "l2test did not pass" '^\[ *[0-9.]+\] L2-TEST-RESULT PASS'
	check "$log" "the edu MSI did not reach L2's eventfd" '^\[ *[0-9.]+\] L2-MSI .*eventfd=[1-9]'
	if [ "$irq" = split ]; then
		case $iommu in
		vtd) check "$log" "L2's dmesg lacks 'DMAR-IR: Enabled IRQ remapping in x2apic mode'" '^\[ *[0-9.]+\] L2-IR .*DMAR-IR: Enabled IRQ remapping in x2apic mode' ;;
		amd-vi) check "$log" "L2's dmesg lacks 'AMD-Vi: Interrupt remapping enabled'" '^\[ *[0-9.]+\] L2-IR .*AMD-Vi: Interrupt remapping enabled' ;;
		esac
		check "$log" "L2's /proc/interrupts has no IR-PCI-MSI line for vfio (the edu MSI is not remapped)" '^\[ *[0-9.]+\] L2-INTR .*IR-PCI-MSI.*vfio'
		check "$log" "L2's /proc/interrupts has no IR-IO-APIC line" '^\[ *[0-9.]+\] L2-INTR .*IR-IO-APIC'
		check "$log" "L2's vfio_iommu_type1 allows unsafe interrupts (want N with remapping)" '^\[ *[0-9.]+\] L2-VFIO-UNSAFE-INTERRUPTS N'
	fi
	check "$log" "no VMM exit report" '^\[ *[0-9.]+\] VMM-REPORT '
	report=$(grep -aE -m1 '^\[ *[0-9.]+\] VMM-REPORT ' "$log" || true)
	if [ -n "$report" ]; then
		grep -q ' stop=poweroff' <<<"$report" || why+=("the VMM did not stop by ACPI power-off")
		grep -q " host=$host " <<<"$report" || why+=("the VMM's host backend is not $host")
		[ "$(report_value host_entries_at_teardown)" = 0 ] ||
			why+=("host mappings at teardown: $(report_value host_entries_at_teardown) (want 0)")
		[ "$(report_value faults)" = 1 ] || why+=("model recorded $(report_value faults) DMA faults (want exactly the 1 provoked)")
		[ "$(report_value edu_dma_failed)" = 1 ] || why+=("edu saw $(report_value edu_dma_failed) failed DMAs (want 1)")
		grep -q 'teardown_error' <<<"$report" && why+=("teardown error in the report")
		[ "$(report_value host_enospc)" != 0 ] || why+=("the host entry limit ($HOST_LIMIT) was never reached")
		grep -q " irq=$irq" <<<"$report" || why+=("the VMM's irqchip mode is not $irq")
		if [ "$irq" = split ]; then
			for src in edu ioapic; do
				n=$(report_value ${src}_ir_remapped)
				[ "${n:-0}" -ge 1 ] || why+=("the VMM remapped no $src interrupt (${src}_ir_remapped=${n:-missing})")
				n=$(report_value ${src}_ir_refused)
				[ "${n:-x}" = 0 ] || why+=("the remapper refused ${n:-?} $src interrupts (want 0)")
			done
		fi
	fi
	if [ ${#why[@]} -gt 0 ]; then
		echo "---- last lines of $log ----" >&2
		tail -30 "$log" >&2
		for w in "${why[@]}"; do echo "nested: FAIL [$iommu/$irq]: $w" >&2; done
		FAILED=$((FAILED + ${#why[@]}))
		status=1
	fi
	stage_done "nested cycle $iommu/$host/$irq (rc=$rc, cycle $cycle s)"
done

total=$(secs $(($(now_ms) - T_START)))
if [ "$status" = 0 ]; then
	echo "nested: PASS (${CYCLES[*]}) in $total s, kernel $KVER, logs in $WORK/logs"
else
	echo "nested: FAIL (${CYCLES[*]}) after $total s, logs in $WORK/logs" >&2
fi
echo "nested: $PASSED passed, $FAILED failed"
exit "$status"
