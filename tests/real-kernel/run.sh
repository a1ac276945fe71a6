#!/usr/bin/env bash
# Real-kernel oracle: runs the host-backend sequence of ./src against the real Linux
# vfio_iommu_type1 inside a QEMU (TCG) guest with an emulated VT-d and/or AMD-Vi and QEMU's
# `edu` device bound to vfio-pci, and compares every result with SimHost. See README.md.
#
# usage: run.sh [--iommu vtd|amd|both] [--limit N] [--work DIR] [--timeout SECONDS]
#
# On a fresh machine (as root) it installs what it needs with apt (qemu-system-x86, cpio,
# xz-utils), downloads the current Debian kernel (resolved through the linux-image-amd64 meta
# package) and busybox-static without installing them (nothing goes to /boot), builds the test
# binary and an initramfs, boots the guest once per IOMMU and parses the verdict from the
# serial console. Downloads, the unpacked kernel and the cargo target dir are cached under the
# work dir (default /var/tmp/viommu-real-kernel). It never skips: anything it cannot install
# or run is a failure whose message says what is missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${VIOMMU_RK_WORK:-/var/tmp/viommu-real-kernel}
IOMMUS=(vtd amd)
LIMIT=64
TIMEOUT=600

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
		sed -n '2,14p' "$0"
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

mkdir -p "$WORK"/debs "$WORK"/logs || die "cannot create work dir $WORK"
# One run at a time per work dir (the cache is not safe against concurrent writers).
exec 9>"$WORK/.lock"
flock -w 1800 9 || die "another run.sh holds $WORK/.lock"

# --- 1. host tools -------------------------------------------------------------------------
APT_UPDATED=0
apt_update() {
	if [ "$APT_UPDATED" = 0 ]; then
		command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
		[ "$(id -u)" = 0 ] || die "not root: cannot run apt-get update (needed for: $*)"
		apt-get update -qq >"$WORK/logs/apt-update.log" 2>&1 ||
			die "apt-get update failed (see $WORK/logs/apt-update.log)"
		APT_UPDATED=1
	fi
}

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
command -v flock >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
	apt_update "${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
		>"$WORK/logs/apt-install.log" 2>&1 ||
		die "apt-get install ${missing[*]} failed (see $WORK/logs/apt-install.log)"
fi
for tool in qemu-system-x86_64 cpio xz gzip timeout dpkg-deb apt-cache cargo; do
	command -v "$tool" >/dev/null || die "required tool '$tool' is not installed"
done
devices=$(qemu-system-x86_64 -device help 2>&1) || die "qemu-system-x86_64 does not run: $devices"
for dev in edu intel-iommu amd-iommu; do
	grep -q "\"$dev\"" <<<"$devices" || die "this qemu-system-x86_64 has no '$dev' device"
done
stage_done "host tools"

# --- 2. kernel and busybox (downloaded, never installed) ------------------------------------
resolve_kernel() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'
}
# Downloads packages "$@" into debs/ unless cached; retries once after apt-get update.
fetch_debs() {
	local want=() p
	for p in "$@"; do
		compgen -G "$WORK/debs/${p}_*.deb" >/dev/null || want+=("$p")
	done
	[ ${#want[@]} -eq 0 ] && return 0
	if ! (cd "$WORK/debs" && apt-get download -qq "${want[@]}") >"$WORK/logs/apt-download.log" 2>&1; then
		apt_update "${want[*]}"
		(cd "$WORK/debs" && apt-get download -qq "${want[@]}") >"$WORK/logs/apt-download.log" 2>&1 ||
			die "apt-get download ${want[*]} failed (see $WORK/logs/apt-download.log)"
	fi
}

KPKG=$(resolve_kernel)
if [ -z "$KPKG" ]; then
	apt_update linux-image-amd64
	KPKG=$(resolve_kernel)
	[ -n "$KPKG" ] || die "cannot resolve the kernel package through linux-image-amd64 (apt-cache depends)"
fi
# Newer Debian splits the image package (linux-binary-*, linux-modules-*): take those too.
KPKGS=("$KPKG")
while read -r dep; do KPKGS+=("$dep"); done < <(apt-cache depends "$KPKG" 2>/dev/null |
	awk '/Depends: linux-(binary|modules)-/{print $2}')
fetch_debs "${KPKGS[@]}" busybox-static

KROOT=$WORK/kern/$KPKG
if [ ! -e "$KROOT/.unpacked" ]; then
	rm -rf "$KROOT" && mkdir -p "$KROOT"
	for p in "${KPKGS[@]}"; do
		for deb in "$WORK"/debs/"${p}"_*.deb; do
			dpkg-deb -x "$deb" "$KROOT" || die "cannot unpack $deb"
		done
	done
	touch "$KROOT/.unpacked"
fi
BBROOT=$WORK/busybox
if [ ! -x "$BBROOT/bin/busybox" ]; then
	rm -rf "$BBROOT" && mkdir -p "$BBROOT"
	dpkg-deb -x "$(compgen -G "$WORK/debs/busybox-static_*.deb" | head -1)" "$BBROOT" ||
		die "cannot unpack busybox-static"
	[ -x "$BBROOT/bin/busybox" ] || die "busybox-static has no bin/busybox"
fi
VMLINUZ=$( (ls "$KROOT"/boot/vmlinuz-* "$KROOT"/usr/lib/modules/*/vmlinuz 2>/dev/null || true) | head -1)
[ -n "$VMLINUZ" ] || die "no vmlinuz in ${KPKGS[*]}"
MODDIR=$( (ls -d "$KROOT"/lib/modules/* "$KROOT"/usr/lib/modules/* 2>/dev/null || true) | head -1)
[ -n "$MODDIR" ] || die "no modules directory in ${KPKGS[*]}"
KVER=${MODDIR##*/}
KCONFIG=$( (ls "$KROOT"/boot/config-* "$MODDIR"/config 2>/dev/null || true) | head -1)
if [ -n "$KCONFIG" ]; then
	for opt in CONFIG_VFIO CONFIG_VFIO_IOMMU_TYPE1 CONFIG_VFIO_PCI CONFIG_INTEL_IOMMU CONFIG_AMD_IOMMU; do
		grep -Eq "^$opt=(y|m)" "$KCONFIG" || die "kernel $KVER is built without $opt"
	done
fi
stage_done "kernel $KVER + busybox"

# --- 3. test binary (static, so it runs in the busybox initramfs) ---------------------------
TARGET_DIR=${VIOMMU_RK_TARGET_DIR:-$WORK/target}
(
	cd "$HERE"
	RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$TARGET_DIR" \
		cargo build --release --locked --quiet --target x86_64-unknown-linux-gnu
) >"$WORK/logs/cargo-build.log" 2>&1 || {
	tail -40 "$WORK/logs/cargo-build.log" >&2
	die "building the test binary failed (see $WORK/logs/cargo-build.log)"
}
BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/release/realkernel-oracle
[ -x "$BIN" ] || die "no binary at $BIN"
stage_done "test binary"

# --- 4. initramfs ---------------------------------------------------------------------------
# Module load order from each module's .modinfo depends= field (the .deb ships no
# modules.dep: depmod runs in its postinst).
declare -A MODPATH
while IFS= read -r f; do
	name=${f##*/}
	name=${name%%.ko*}
	MODPATH[${name//-/_}]=$f
done < <(find "$MODDIR" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst')
modcat() {
	case "$1" in
	*.xz) xz -dc "$1" ;;
	*.zst) zstd -dc "$1" ;;
	*) cat "$1" ;;
	esac
}
ORDER=()
declare -A SEEN
visit() {
	local n=${1//-/_} d
	[ -n "${SEEN[$n]:-}" ] && return 0
	SEEN[$n]=1
	if [ -z "${MODPATH[$n]:-}" ]; then
		grep -q "/$n.ko" "$MODDIR/modules.builtin" 2>/dev/null ||
			grep -q "/${n//_/-}.ko" "$MODDIR/modules.builtin" 2>/dev/null ||
			die "module $n is neither shipped nor built in to $KVER"
		return 0
	fi
	local deps
	deps=$(modcat "${MODPATH[$n]}" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -1)
	for d in ${deps//,/ }; do visit "$d"; done
	ORDER+=("$n")
}
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
for iommu in "${IOMMUS[@]}"; do
	case $iommu in
	vtd) dev=intel-iommu,intremap=on,caching-mode=on ;;
	amd) dev=amd-iommu,intremap=on ;;
	esac
	log=$WORK/logs/$iommu.serial.log
	qlog=$WORK/logs/$iommu.qemu.log
	rc=0
	timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -nodefaults -no-user-config -display none \
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
		why="qemu-system-x86_64 exited with $rc"
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
	stage_done "guest run $iommu (rc=$rc)"
done

total=$(secs $(($(now_ms) - T_START)))
if [ "$status" = 0 ]; then
	echo "real-kernel: PASS (${IOMMUS[*]}) in $total s, kernel $KVER, logs in $WORK/logs"
else
	echo "real-kernel: FAIL (${IOMMUS[*]}) after $total s, logs in $WORK/logs" >&2
fi
exit "$status"
