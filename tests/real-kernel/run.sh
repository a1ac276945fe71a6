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

mkdir -p "$WORK"/debs "$WORK"/logs || die "cannot create work dir $WORK"

# --- 1. host tools and QEMU -----------------------------------------------------------------
APT_UPDATED=0
apt_update() {
	if [ "$APT_UPDATED" = 0 ]; then
		command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
		[ "$(id -u)" = 0 ] || die "not root: cannot run apt-get update (needed for: $*)"
		apt-get update -qq >"$WORK/logs/apt-update.log" 2>&1 ||
			die "apt-get update failed: $(tail -3 "$WORK/logs/apt-update.log")"
		APT_UPDATED=1
	fi
}
apt_install() {
	apt_update "$*"
	# --no-remove: never take anything off the machine to make room for these.
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-remove "$@" \
		>"$WORK/logs/apt-install.log" 2>&1 ||
		die "apt-get install $* failed: $(tail -5 "$WORK/logs/apt-install.log")"
}
# Downloads packages "$@" (name or name=version) into debs/ unless cached. Returns non-zero
# instead of failing so that callers can update the lists and re-resolve names.
fetch_debs() {
	local want=() p
	for p in "$@"; do
		compgen -G "$(deb_glob "$p")" >/dev/null || want+=("$p")
	done
	[ ${#want[@]} -eq 0 ] && return 0
	(cd "$WORK/debs" && apt-get download -qq "${want[@]}") >"$WORK/logs/apt-download.log" 2>&1
}
# Glob for the cached .deb of name or name=version (apt writes an epoch "1:" as "1%3a").
deb_glob() {
	case "$1" in
	*=*) local v=${1#*=}; echo "$WORK/debs/${1%%=*}_*${v#*:}_*.deb" ;;
	*) echo "$WORK/debs/${1}_*.deb" ;;
	esac
}

missing=()
command -v cpio >/dev/null || missing+=(cpio)
command -v xz >/dev/null || missing+=(xz-utils)
command -v flock >/dev/null || missing+=(util-linux)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
for tool in cpio xz gzip timeout flock ldd dpkg-deb dpkg-query apt-get apt-cache cargo; do
	command -v "$tool" >/dev/null || die "required tool '$tool' is not installed"
done
mkdir -p "$WORK/debs" "$WORK/logs"
# One run at a time per work dir (the cache is not safe against concurrent writers).
exec 9>"$WORK/.lock"
flock -w 1800 9 || die "another run.sh holds $WORK/.lock"

# QEMU: the distribution's qemu-system-x86 from its own archive, unpacked into the work dir
# rather than installed. Installing it can conflict with a newer qemu-utils already on the
# machine (a bookworm-backports qemu-utils 10 Breaks qemu-system-common << 8, and apt would
# remove it), and QEMU 10.0's amd-iommu breaks IO-APIC interrupts for Linux 6.1 ("timer
# doesn't work through Interrupt-remapped IO-APIC"), so the version used here is the
# archive's (7.2 on bookworm), whatever else is installed. Its shared libraries are
# installed with apt (plain library packages; nothing is removed).
newest_version() { apt-cache madison "$1" 2>/dev/null | awk -F'|' 'NR==1{gsub(/ /,"",$2); print $2}'; }
# A QEMU unpacked by an earlier run is reused as it is (its version is in the directory name).
QVER=$( (ls -d "$WORK"/qemu/*/.unpacked 2>/dev/null || true) | head -1 | sed 's|.*/qemu/\([^/]*\)/.unpacked|\1|; s|_|:|')
[ -n "$QVER" ] || QVER=$(newest_version qemu-system-x86)
if [ -z "$QVER" ]; then
	apt_update qemu-system-x86
	QVER=$(newest_version qemu-system-x86)
	[ -n "$QVER" ] || die "apt knows no qemu-system-x86 package (apt-cache madison qemu-system-x86)"
fi
QROOT=$WORK/qemu/${QVER//:/_}
if [ ! -e "$QROOT/.unpacked" ]; then
	QDATA=${QVER%+b[0-9]*} # binNMUs of the arch packages keep the data package's version
	# Versions pinned to the archive's: apt's candidate may be an installed newer package
	# that no configured source has.
	QPKGS=("qemu-system-x86=$QVER" "qemu-system-common=$QVER" "qemu-system-data=$QDATA"
		"seabios=$(newest_version seabios)" "ipxe-qemu=$(newest_version ipxe-qemu)")
	if ! fetch_debs "${QPKGS[@]}"; then
		apt_update qemu-system-x86
		fetch_debs "${QPKGS[@]}" || die "apt-get download ${QPKGS[*]} failed: $(tail -3 "$WORK/logs/apt-download.log")"
	fi
	rm -rf "$QROOT" && mkdir -p "$QROOT"
	for p in "${QPKGS[@]}"; do
		deb=$(compgen -G "$(deb_glob "$p")" | head -1)
		[ -n "$deb" ] || die "no .deb for $p after download"
		dpkg-deb -x "$deb" "$QROOT" || die "cannot unpack $deb"
	done
	touch "$QROOT/.unpacked"
fi
QEMU=$QROOT/usr/bin/qemu-system-x86_64
[ -x "$QEMU" ] || die "no qemu-system-x86_64 in $QROOT"
# Runtime libraries: the Depends of the two binary packages, minus QEMU's own packages and
# firmware (unpacked above), installed where missing.
libs=()
ldd "$QEMU" 2>&1 | grep -q 'not found' || [ ! -e "$QROOT/.libs-ok" ] || QEMU_LIBS_OK=1
[ -n "${QEMU_LIBS_OK:-}" ] || for dep in $(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
	--no-replaces --no-enhances "qemu-system-x86=$QVER" "qemu-system-common=$QVER" 2>/dev/null |
	awk '/^ *(PreDepends|Depends):/{print $2}' | sort -u); do
	case "$dep" in qemu-* | seabios | ipxe-qemu | "<"*) continue ;; esac
	dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q "install ok installed" || libs+=("$dep")
done
[ ${#libs[@]} -eq 0 ] || apt_install "${libs[@]}"
unresolved=$(ldd "$QEMU" 2>&1 | awk '/not found/{print $1}' | tr '\n' ' ')
[ -z "$unresolved" ] || die "$QEMU: shared libraries not found: $unresolved"
touch "$QROOT/.libs-ok"
QEMU_ARGS=(-L "$QROOT/usr/share/qemu" -L "$QROOT/usr/share/seabios")
devices=$("$QEMU" "${QEMU_ARGS[@]}" -device help 2>&1) || die "$QEMU does not run: $devices"
for dev in edu intel-iommu amd-iommu; do
	grep -q "\"$dev\"" <<<"$devices" || die "$QEMU has no '$dev' device"
done
stage_done "host tools, QEMU $QVER"

# --- 2. kernel and busybox (downloaded, never installed) ------------------------------------
# The kernel package name carries the ABI (linux-image-6.1.0-57-amd64), which changes with
# every security update and leaves the mirror: resolve it through the meta package each run.
resolve_kernel() {
	KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	KPKGS=()
	[ -n "$KPKG" ] || return 1
	# Unpacked by an earlier run: nothing to fetch.
	if [ -e "$WORK/kern/$KPKG/.unpacked" ] && [ -x "$WORK/busybox/bin/busybox" ]; then
		read -r -a KPKGS <"$WORK/kern/$KPKG/.unpacked" || true
		[ ${#KPKGS[@]} -gt 0 ] || KPKGS=("$KPKG")
		return 0
	fi
	KPKGS=("$KPKG")
	# Newer Debian splits the image package (linux-binary-*, linux-modules-*): take those too.
	while read -r dep; do KPKGS+=("$dep"); done < <(apt-cache depends "$KPKG" 2>/dev/null |
		awk '/Depends: linux-(binary|modules)-/{print $2}')
	fetch_debs "${KPKGS[@]}" busybox-static
}
# Cached lists may be stale (or absent) on a fresh machine: update once and resolve again.
if ! resolve_kernel; then
	apt_update linux-image-amd64 busybox-static
	resolve_kernel || die "cannot get the kernel through linux-image-amd64 (${KPKG:-not resolved}) or busybox-static: $(tail -3 "$WORK/logs/apt-download.log" 2>/dev/null)"
fi
# Drop cached kernels of older ABIs.
for old in "$WORK"/kern/*; do
	[ -d "$old" ] && [ "${old##*/}" != "$KPKG" ] && rm -rf "$old"
done
for old in "$WORK"/debs/linux-*.deb; do
	[ -e "$old" ] || continue
	keep=0
	for p in "${KPKGS[@]}"; do [[ ${old##*/} == "${p}"_* ]] && keep=1; done
	[ "$keep" = 1 ] || rm -f "$old"
done

KROOT=$WORK/kern/$KPKG
if [ ! -e "$KROOT/.unpacked" ]; then
	rm -rf "$KROOT" && mkdir -p "$KROOT"
	for p in "${KPKGS[@]}"; do
		for deb in "$WORK"/debs/"${p}"_*.deb; do
			dpkg-deb -x "$deb" "$KROOT" || die "cannot unpack $deb"
		done
	done
	echo "${KPKGS[*]}" >"$KROOT/.unpacked"
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
		cargo build --release --quiet --target x86_64-unknown-linux-gnu
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
