# Shared set-up of the QEMU-based harnesses (sourced, not run): stage 1 installs host tools and
# unpacks Debian's QEMU, stage 2 downloads and unpacks the current Debian kernel and
# busybox-static, all cached under $WORK; then helpers to put kernel modules into an initramfs
# in dependency order.
#
# The caller defines WORK, die() and stage_done(). Afterwards QEMU, QEMU_ARGS, KPKG, KVER,
# VMLINUZ, MODDIR and BBROOT are set, and `visit MODULE` appends MODULE and its dependencies to
# ORDER (load order); `modcat FILE` prints a (possibly compressed) module.
# It never skips: whatever it cannot install or find is a failure naming the missing piece.
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
