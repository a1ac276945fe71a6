#!/usr/bin/env bash
# Real-kernel oracle: runs the host-backend sequence of ./src against the real Linux
# vfio_iommu_type1 inside a QEMU (TCG) guest with an emulated VT-d and/or AMD-Vi and QEMU's
# `edu` device bound to vfio-pci, and compares every result with SimHost. See README.md.
#
# usage: run.sh [--iommu vtd|amd|both] [--limit N] [--work DIR] [--timeout SECONDS]
#
# On a fresh machine (as root) it installs what it needs with apt (cpio, xz-utils, QEMU's
# shared libraries), downloads Debian's qemu-system-x86 (unpacked, not installed: see stage 1),
# the current Debian kernel (resolved through the linux-image-amd64 meta package) and
# busybox-static (nothing goes to /boot), builds the test binary and an initramfs, boots the
# guest once per IOMMU and parses the verdict from the serial console. Downloads, unpacked
# packages and the cargo target dir are cached under the work dir (default
# /var/tmp/viommu-real-kernel; VIOMMU_RK_WORK, VIOMMU_RK_TARGET_DIR). It never skips:
# anything it cannot install or run is a failure whose message says what is missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${VIOMMU_RK_WORK:-/var/tmp/viommu-real-kernel}
IOMMUS=(vtd amd)
LIMIT=64
TIMEOUT=300

die() {
	echo "real-kernel: FAIL: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case "$1" in
	--iommu)
		case "${2:-}" in
		vtd | amd) IOMMUS=("$2") ;;
		both) IOMMUS=(vtd amd) ;;
		*) die "--iommu takes vtd, amd or both" ;;
		esac
		shift 2
		;;
	--limit)
		[[ ${2:-} =~ ^[0-9]+$ ]] && [ "$2" -ge 16 ] || die "--limit takes a number >= 16"
		LIMIT=$2
		shift 2
		;;
	--work)
		WORK=${2:?--work takes a directory}
		shift 2
		;;
	--timeout)
		[[ ${2:-} =~ ^[0-9]+$ ]] || die "--timeout takes seconds"
		TIMEOUT=$2
		shift 2
		;;
	-h | --help)
		sed -n '2,15p' "$0"
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
	printf 'real-kernel: %-40s %6s s\n' "$1" "$(secs $((now - T_STAGE)))"
	T_STAGE=$now
}

# Stages 1 and 2 (QEMU, kernel, busybox; cached) and the module helpers, shared with
# tests/nested/run.sh.
# shellcheck source=setup.sh
source "$HERE/setup.sh"

# --- 3. test binary (static, so it runs in the busybox initramfs) ---------------------------
TARGET_DIR=${VIOMMU_RK_TARGET_DIR:-$WORK/target}
(
	cd "$HERE"
	RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$TARGET_DIR" \
		cargo build --release --quiet --target x86_64-unknown-linux-gnu
) >"$WORK/logs/cargo-build.log" 2>&1 || {
	tail -40 "$WORK/logs/cargo-build.log" >&2
	die "building the test binary failed (see $WORK/logs/cargo-build.log)"
}
BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/release/realkernel-oracle
[ -x "$BIN" ] || die "no binary at $BIN"
stage_done "test binary"

# --- 4. initramfs ---------------------------------------------------------------------------
visit vfio_pci
visit vfio_iommu_type1

RD=$WORK/initrd.d
rm -rf "$RD" && mkdir -p "$RD"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$BBROOT/bin/busybox" "$RD/bin/busybox"
cp "$HERE/init.sh" "$RD/init" && chmod +x "$RD/init"
cp "$BIN" "$RD/realkernel-oracle"
: >"$RD/modules.load"
for n in "${ORDER[@]}"; do
	modcat "${MODPATH[$n]}" >"$RD/lib/modules/$n.ko"
	echo "$n" >>"$RD/modules.load"
done
INITRD=$WORK/initrd.cpio.gz
(cd "$RD" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -6 >"$INITRD") || die "cannot pack the initramfs"
stage_done "initramfs (${ORDER[*]})"

# --- 5. boot once per IOMMU, parse the verdict ----------------------------------------------
status=0
PASSED=0
FAILED=0
for iommu in "${IOMMUS[@]}"; do
	case $iommu in
	vtd) dev=intel-iommu,intremap=on,caching-mode=on ;;
	amd) dev=amd-iommu,intremap=on ;;
	esac
	log=$WORK/logs/$iommu.serial.log
	qlog=$WORK/logs/$iommu.qemu.log
	rc=0
	timeout --kill-after=10 "$TIMEOUT" "$QEMU" "${QEMU_ARGS[@]}" -nodefaults -no-user-config -display none \
		-accel tcg -machine q35,kernel-irqchip=split -cpu max -smp 1 -m 1G \
		-device "$dev" -device edu \
		-kernel "$VMLINUZ" -initrd "$INITRD" \
		-append "console=ttyS0 panic=-1 vfio_iommu_type1.dma_entry_limit=$LIMIT viommu.iommu=$iommu" \
		-serial "file:$log" -no-reboot </dev/null >"$qlog" 2>&1 || rc=$?
	tr -d '\r' <"$log" | grep -a '^REALKERNEL' || true
	result=$(tr -d '\r' <"$log" | grep -a '^REALKERNEL-RESULT' | tail -1 || true)
	exit_line=$(tr -d '\r' <"$log" | grep -a '^REALKERNEL-EXIT' | tail -1 || true)
	why=""
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		why="QEMU did not finish within $TIMEOUT s"
	elif [ "$rc" != 0 ]; then
		why="QEMU exited with $rc"
	elif grep -aq 'Kernel panic' "$log"; then
		why="guest kernel panic: $(grep -a -m1 'Kernel panic' "$log" | tr -d '\r')"
	elif [ -z "$result" ]; then
		why="no REALKERNEL-RESULT line on the serial console"
	elif [ "$exit_line" != "REALKERNEL-EXIT rc=0" ]; then
		why="test binary: ${exit_line:-no exit line}"
	elif ! grep -q 'status=PASS' <<<"$result"; then
		why="verdict is not PASS"
	fi
	if [ -n "$why" ]; then
		echo "---- last lines of $log ----" >&2
		tr -d '\r' <"$log" | tail -40 >&2
		echo "---- $qlog ----" >&2
		tail -20 "$qlog" >&2
		echo "real-kernel: FAIL [$iommu]: $why" >&2
		status=1
	fi
	# Steps compared plus device checks, and their failures.
	for kv in agreed checks_passed; do
		n=$(sed -n "s/.* $kv=\([0-9]*\).*/\1/p" <<<"$result")
		PASSED=$((PASSED + ${n:-0}))
	done
	for kv in disagreed checks_failed; do
		n=$(sed -n "s/.* $kv=\([0-9]*\).*/\1/p" <<<"$result")
		FAILED=$((FAILED + ${n:-0}))
	done
	[ -z "$why" ] || FAILED=$((FAILED + 1))
	stage_done "guest run $iommu (rc=$rc)"
done

total=$(secs $(($(now_ms) - T_START)))
if [ "$status" = 0 ]; then
	echo "real-kernel: PASS (${IOMMUS[*]}) in $total s, kernel $KVER, logs in $WORK/logs"
else
	echo "real-kernel: FAIL (${IOMMUS[*]}) after $total s, logs in $WORK/logs" >&2
fi
echo "real-kernel: $PASSED passed, $FAILED failed"
exit "$status"
