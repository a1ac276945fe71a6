//! Parser for the `VFIO_IOMMU_GET_INFO` answer: `struct vfio_iommu_type1_info` followed by a
//! capability chain (reference: `anchors-s390-vfio.md` B.1 and B.5).
//!
//! The parser is a pure function over bytes in host byte order, so it can be tested and fuzzed
//! without a kernel. It never panics, visits at most [`MAX_CAPS`] capabilities, only follows
//! `next` offsets that move forward, and allocates no more than the buffer can describe.

use crate::addr::AddrRange;
use std::fmt;
use vfio_bindings::bindings::vfio::{
    VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
    VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
};

/// Most capabilities [`parse_iommu_info`] visits before it gives up on a chain (the kernel
/// emits at most three).
pub const MAX_CAPS: usize = 64;

/// Size of `struct vfio_iommu_type1_info` (with its trailing pad): capabilities start at or
/// after this offset.
pub const INFO_HEADER_SIZE: usize = 24;

/// Bytes up to and including `iova_pgsizes`: the smallest answer the kernel accepts
/// (`argsz < offsetofend(iova_pgsizes)` is `EINVAL`).
pub const INFO_MIN_SIZE: usize = 16;

/// Bytes up to and including `cap_offset`; shorter answers (old ABI) carry no capabilities.
const INFO_CAPS_SIZE: usize = 20;

/// Size of `struct vfio_info_cap_header { u16 id; u16 version; u32 next; }`.
const CAP_HEADER_SIZE: usize = 8;

/// Size of `vfio_iommu_type1_info_dma_avail` (header + `u32 avail`).
const DMA_AVAIL_SIZE: usize = 12;

/// Size of `vfio_iommu_type1_info_cap_migration` (header, `u32 flags`, pad,
/// `u64 pgsize_bitmap`, `u64 max_dirty_bitmap_size`).
const MIGRATION_SIZE: usize = 32;

/// Size of the fixed part of `vfio_iommu_type1_info_cap_iova_range` (header, `u32 nr_iovas`,
/// `u32 reserved`); `nr_iovas` entries of [`IOVA_RANGE_ENTRY_SIZE`] follow.
const IOVA_RANGE_FIXED_SIZE: usize = 16;

/// Size of one `struct vfio_iova_range { u64 start; u64 end; }`.
const IOVA_RANGE_ENTRY_SIZE: usize = 16;

/// The `MIGRATION` capability (id 2) of a type1 container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrationCap {
    /// Capability flags (none defined so far).
    pub flags: u32,
    /// Page sizes dirty tracking supports (the smallest IOMMU page size).
    pub pgsize_bitmap: u64,
    /// Largest dirty bitmap, in bytes, one `GET_BITMAP` request may ask for.
    pub max_dirty_bitmap_size: u64,
}

/// What `VFIO_IOMMU_GET_INFO` reported, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IommuInfo {
    /// The `argsz` the kernel wrote back: the buffer size it needs for the whole answer. When
    /// it exceeds the buffer that was passed, the capabilities were not copied.
    pub argsz: u32,
    /// `VFIO_IOMMU_INFO_*` flags.
    pub flags: u32,
    /// Supported IOMMU page sizes, present when the `PGSIZES` flag is set.
    pub iova_pgsizes: Option<u64>,
    /// `DMA_AVAIL` capability (id 3): how many more mappings the container accepts. Absent
    /// before Linux 5.10 (the limit exists since 5.1 but is not reported).
    pub dma_avail: Option<u32>,
    /// `IOVA_RANGE` capability (id 1) converted to half-open ranges (an inclusive end of
    /// `u64::MAX` becomes an exclusive end of `u64::MAX`). Absent when the kernel did not send
    /// it, which type1 does when the valid-IOVA list is empty, i.e. unrestricted.
    pub iova_ranges: Option<Vec<AddrRange>>,
    /// `MIGRATION` capability (id 2).
    pub migration: Option<MigrationCap>,
}

/// Why [`parse_iommu_info`] rejected a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfoParseError {
    /// The buffer is shorter than the fixed fields up to `iova_pgsizes` (16 bytes).
    ShortHeader {
        /// Length of the buffer.
        len: usize,
    },
    /// A capability offset (`cap_offset` or a `next`) lies inside the fixed header, does not
    /// move past the previous capability's header, or leaves no room for a capability header.
    BadOffset {
        /// The offending offset.
        offset: u32,
    },
    /// A known capability extends past the end of the buffer (including an `IOVA_RANGE`
    /// whose `nr_iovas` needs more bytes than there are).
    TruncatedCap {
        /// Capability id.
        id: u16,
        /// Offset of the capability.
        offset: usize,
    },
    /// A known capability appears twice in the chain.
    DuplicateCap {
        /// Capability id.
        id: u16,
    },
    /// More than [`MAX_CAPS`] capabilities are chained.
    TooManyCaps,
    /// An `IOVA_RANGE` entry has `start > end`.
    InvertedRange {
        /// Inclusive start.
        start: u64,
        /// Inclusive end.
        end: u64,
    },
}

impl fmt::Display for InfoParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfoParseError::ShortHeader { len } => {
                write!(f, "IOMMU info of {len} bytes is shorter than its header")
            }
            InfoParseError::BadOffset { offset } => {
                write!(f, "IOMMU info capability offset {offset:#x} is invalid")
            }
            InfoParseError::TruncatedCap { id, offset } => {
                write!(f, "IOMMU info capability {id} at {offset:#x} is truncated")
            }
            InfoParseError::DuplicateCap { id } => {
                write!(f, "IOMMU info capability {id} appears twice")
            }
            InfoParseError::TooManyCaps => {
                write!(f, "IOMMU info chains more than {MAX_CAPS} capabilities")
            }
            InfoParseError::InvertedRange { start, end } => {
                write!(f, "IOMMU info IOVA range {start:#x}..={end:#x} is inverted")
            }
        }
    }
}

impl std::error::Error for InfoParseError {}

/// Reads a native-endian `u16` at `off`, or `None` past the end.
fn read_u16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes(b.try_into().ok()?))
}

/// Reads a native-endian `u32` at `off`, or `None` past the end.
fn read_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

/// Reads a native-endian `u64` at `off`, or `None` past the end.
fn read_u64(buf: &[u8], off: usize) -> Option<u64> {
    let b = buf.get(off..off.checked_add(8)?)?;
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

/// True when `[off, off + size)` lies inside `buf`.
fn fits(buf: &[u8], off: usize, size: usize) -> bool {
    off.checked_add(size).is_some_and(|end| end <= buf.len())
}

/// Decodes a `VFIO_IOMMU_GET_INFO` answer (native byte order, as the kernel wrote it).
///
/// `buf` should be exactly the `argsz` bytes that were passed to the kernel. Buffers shorter
/// than 20 bytes (the old ABI without `cap_offset`) and answers without the `CAPS` flag or with
/// `cap_offset == 0` (the kernel's answer to a too-small `argsz`) decode without capabilities.
/// Unknown capability ids are skipped.
///
/// # Errors
/// [`InfoParseError`] when the buffer is malformed: a short header, a capability offset that
/// points into the header, backwards, to itself or out of the buffer, a truncated known
/// capability, a duplicate known capability, more than [`MAX_CAPS`] capabilities, or an
/// inverted IOVA range.
pub fn parse_iommu_info(buf: &[u8]) -> Result<IommuInfo, InfoParseError> {
    let short = InfoParseError::ShortHeader { len: buf.len() };
    let argsz = read_u32(buf, 0).ok_or(short)?;
    let flags = read_u32(buf, 4).ok_or(short)?;
    let pgsizes = read_u64(buf, 8).ok_or(short)?;
    let mut info = IommuInfo {
        argsz,
        flags,
        iova_pgsizes: (flags & VFIO_IOMMU_INFO_PGSIZES != 0).then_some(pgsizes),
        ..IommuInfo::default()
    };
    if flags & VFIO_IOMMU_INFO_CAPS == 0 || buf.len() < INFO_CAPS_SIZE {
        return Ok(info);
    }
    let mut next = read_u32(buf, 16).unwrap_or(0);
    // Capabilities must not overlap the fixed header nor each other's headers: each offset is
    // at least this, which rises by a header size every step, so the walk always ends.
    let mut min_offset = INFO_HEADER_SIZE;
    let mut visited = 0usize;
    while next != 0 {
        if visited == MAX_CAPS {
            return Err(InfoParseError::TooManyCaps);
        }
        visited += 1;
        let bad = InfoParseError::BadOffset { offset: next };
        let off = usize::try_from(next).map_err(|_| bad)?;
        if off < min_offset || !fits(buf, off, CAP_HEADER_SIZE) {
            return Err(bad);
        }
        let id = read_u16(buf, off).ok_or(bad)?;
        next = read_u32(buf, off + 4).ok_or(bad)?;
        min_offset = off + CAP_HEADER_SIZE;
        parse_cap(buf, off, id, &mut info)?;
    }
    Ok(info)
}

/// Decodes the capability `id` at `off` (its header is known to fit) into `info`.
fn parse_cap(buf: &[u8], off: usize, id: u16, info: &mut IommuInfo) -> Result<(), InfoParseError> {
    let truncated = InfoParseError::TruncatedCap { id, offset: off };
    let duplicate = InfoParseError::DuplicateCap { id };
    match u32::from(id) {
        VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => {
            if info.dma_avail.is_some() {
                return Err(duplicate);
            }
            if !fits(buf, off, DMA_AVAIL_SIZE) {
                return Err(truncated);
            }
            info.dma_avail = Some(read_u32(buf, off + 8).ok_or(truncated)?);
        }
        VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION => {
            if info.migration.is_some() {
                return Err(duplicate);
            }
            if !fits(buf, off, MIGRATION_SIZE) {
                return Err(truncated);
            }
            info.migration = Some(MigrationCap {
                flags: read_u32(buf, off + 8).ok_or(truncated)?,
                pgsize_bitmap: read_u64(buf, off + 16).ok_or(truncated)?,
                max_dirty_bitmap_size: read_u64(buf, off + 24).ok_or(truncated)?,
            });
        }
        VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
            if info.iova_ranges.is_some() {
                return Err(duplicate);
            }
            if !fits(buf, off, IOVA_RANGE_FIXED_SIZE) {
                return Err(truncated);
            }
            let nr = read_u32(buf, off + 8).ok_or(truncated)?;
            let nr = usize::try_from(nr).map_err(|_| truncated)?;
            let first = off + IOVA_RANGE_FIXED_SIZE;
            let bytes = nr.checked_mul(IOVA_RANGE_ENTRY_SIZE).ok_or(truncated)?;
            // Checked before allocating: `nr` is bounded by the buffer length from here on.
            if !fits(buf, first, bytes) {
                return Err(truncated);
            }
            let mut ranges = Vec::with_capacity(nr);
            for i in 0..nr {
                let at = first + i * IOVA_RANGE_ENTRY_SIZE;
                let start = read_u64(buf, at).ok_or(truncated)?;
                let end = read_u64(buf, at + 8).ok_or(truncated)?;
                if start > end {
                    return Err(InfoParseError::InvertedRange { start, end });
                }
                ranges.push(AddrRange::new(start, end.saturating_add(1)));
            }
            info.iova_ranges = Some(ranges);
        }
        _ => {}
    }
    Ok(())
}

/// Builders for hand-made `GET_INFO` answers, shared by this module's and the backend's tests.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// One capability to put in a chain: id, version and body (bytes after the header).
    pub(crate) struct Cap {
        pub id: u16,
        pub body: Vec<u8>,
    }

    /// `DMA_AVAIL` with `avail`.
    pub(crate) fn dma_avail(avail: u32) -> Cap {
        Cap {
            id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL as u16,
            body: avail.to_ne_bytes().to_vec(),
        }
    }

    /// `MIGRATION` with the given fields.
    pub(crate) fn migration(flags: u32, pgsize_bitmap: u64, max: u64) -> Cap {
        let mut body = Vec::new();
        body.extend_from_slice(&flags.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&pgsize_bitmap.to_ne_bytes());
        body.extend_from_slice(&max.to_ne_bytes());
        Cap {
            id: VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION as u16,
            body,
        }
    }

    /// `IOVA_RANGE` with `nr_iovas` set to `nr` and the given inclusive ranges.
    pub(crate) fn iova_range(nr: u32, ranges: &[(u64, u64)]) -> Cap {
        let mut body = Vec::new();
        body.extend_from_slice(&nr.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        for &(s, e) in ranges {
            body.extend_from_slice(&s.to_ne_bytes());
            body.extend_from_slice(&e.to_ne_bytes());
        }
        Cap {
            id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16,
            body,
        }
    }

    /// A complete answer as type1 writes it: header (flags `PGSIZES | CAPS`, `argsz` = total
    /// size) and the caps chained in order, each aligned to 8 bytes.
    pub(crate) fn info(pgsizes: u64, caps: &[Cap]) -> Vec<u8> {
        let mut buf = vec![0u8; INFO_HEADER_SIZE];
        let mut prev_next_at = 16; // cap_offset
        for cap in caps {
            let off = buf.len() as u32;
            buf[prev_next_at..prev_next_at + 4].copy_from_slice(&off.to_ne_bytes());
            prev_next_at = buf.len() + 4;
            buf.extend_from_slice(&cap.id.to_ne_bytes());
            buf.extend_from_slice(&1u16.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&cap.body);
            buf.resize(buf.len().next_multiple_of(8), 0);
        }
        let flags = VFIO_IOMMU_INFO_PGSIZES
            | if caps.is_empty() {
                0
            } else {
                VFIO_IOMMU_INFO_CAPS
            };
        let argsz = buf.len() as u32;
        buf[0..4].copy_from_slice(&argsz.to_ne_bytes());
        buf[4..8].copy_from_slice(&flags.to_ne_bytes());
        buf[8..16].copy_from_slice(&pgsizes.to_ne_bytes());
        buf
    }

    /// Overwrites the `u32` at `off`.
    pub(crate) fn put_u32(buf: &mut [u8], off: usize, v: u32) {
        buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    fn normal() -> Vec<u8> {
        info(
            0x4020_1000,
            &[
                migration(0, 0x1000, 256 << 20),
                dma_avail(65_000),
                iova_range(2, &[(0, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)]),
            ],
        )
    }

    #[test]
    fn normal_chain() {
        let buf = normal();
        let info = parse_iommu_info(&buf).unwrap();
        assert_eq!(info.argsz as usize, buf.len());
        assert_eq!(info.iova_pgsizes, Some(0x4020_1000));
        assert_eq!(info.dma_avail, Some(65_000));
        assert_eq!(
            info.migration,
            Some(MigrationCap {
                flags: 0,
                pgsize_bitmap: 0x1000,
                max_dirty_bitmap_size: 256 << 20
            })
        );
        assert_eq!(
            info.iova_ranges,
            Some(vec![
                AddrRange::new(0, 0xfee0_0000),
                AddrRange::new(0xfef0_0000, 1 << 39)
            ])
        );
    }

    #[test]
    fn inclusive_end_at_top_saturates() {
        let buf = info(0x1000, &[iova_range(1, &[(0x1000, u64::MAX)])]);
        let info = parse_iommu_info(&buf).unwrap();
        assert_eq!(
            info.iova_ranges,
            Some(vec![AddrRange::new(0x1000, u64::MAX)])
        );
        assert_eq!(info.dma_avail, None);
        assert_eq!(info.migration, None);
    }

    #[test]
    fn unknown_caps_are_skipped() {
        let unknown = Cap {
            id: 0x7777,
            body: vec![0xab; 12],
        };
        let buf = info(0x1000, &[unknown, dma_avail(7)]);
        assert_eq!(parse_iommu_info(&buf).unwrap().dma_avail, Some(7));
    }

    #[test]
    fn no_caps_flag_or_zero_offset_means_no_caps() {
        // Too-small argsz answer: CAPS set, cap_offset 0, argsz raised.
        let mut buf = normal();
        let full = buf.len() as u32;
        buf.truncate(INFO_HEADER_SIZE);
        put_u32(&mut buf, 16, 0);
        let info = parse_iommu_info(&buf).unwrap();
        assert_eq!(info.argsz, full);
        assert_eq!(info.dma_avail, None);
        assert_eq!(info.iova_ranges, None);

        // CAPS flag clear: the chain is ignored.
        let mut buf = normal();
        put_u32(&mut buf, 4, VFIO_IOMMU_INFO_PGSIZES);
        assert_eq!(parse_iommu_info(&buf).unwrap().dma_avail, None);

        // Old ABI, 16 bytes.
        let buf = normal();
        let info = parse_iommu_info(&buf[..INFO_MIN_SIZE]).unwrap();
        assert_eq!(info.iova_pgsizes, Some(0x4020_1000));
        assert_eq!(info.dma_avail, None);
    }

    #[test]
    fn short_header() {
        for len in 0..INFO_MIN_SIZE {
            assert_eq!(
                parse_iommu_info(&normal()[..len]),
                Err(InfoParseError::ShortHeader { len })
            );
        }
    }

    #[test]
    fn self_loop_terminates() {
        let mut buf = info(0x1000, &[dma_avail(1)]);
        // The only cap is at 24; point its next at itself.
        put_u32(&mut buf, 24 + 4, 24);
        assert_eq!(
            parse_iommu_info(&buf),
            Err(InfoParseError::BadOffset { offset: 24 })
        );
    }

    #[test]
    fn backwards_next_terminates() {
        let mut buf = normal();
        // Third cap's next -> the first cap.
        let first = read_u32(&buf, 16).unwrap();
        let second = read_u32(&buf, first as usize + 4).unwrap();
        let third = read_u32(&buf, second as usize + 4).unwrap();
        put_u32(&mut buf, third as usize + 4, first);
        assert_eq!(
            parse_iommu_info(&buf),
            Err(InfoParseError::BadOffset { offset: first })
        );
        // A next into the fixed header.
        let mut buf = normal();
        put_u32(&mut buf, 16, 8);
        assert_eq!(
            parse_iommu_info(&buf),
            Err(InfoParseError::BadOffset { offset: 8 })
        );
        // A next that overlaps the previous header.
        let mut buf = normal();
        put_u32(&mut buf, first as usize + 4, first + 4);
        assert_eq!(
            parse_iommu_info(&buf),
            Err(InfoParseError::BadOffset { offset: first + 4 })
        );
    }

    #[test]
    fn out_of_bounds_next() {
        for off in [u32::MAX, 0x1_0000] {
            let mut buf = normal();
            put_u32(&mut buf, 16, off);
            assert_eq!(
                parse_iommu_info(&buf),
                Err(InfoParseError::BadOffset { offset: off })
            );
        }
        // Header straddling the end.
        let mut buf = normal();
        let len = buf.len() as u32;
        put_u32(&mut buf, 16, len - 4);
        assert_eq!(
            parse_iommu_info(&buf),
            Err(InfoParseError::BadOffset { offset: len - 4 })
        );
    }

    #[test]
    fn truncated_caps() {
        // Cut each known cap right after its header (and one byte short of its end).
        for cap in [
            dma_avail(3),
            migration(0, 0x1000, 1),
            iova_range(1, &[(0, 0xfff)]),
        ] {
            let id = cap.id;
            let full = info(0x1000, &[cap]);
            let need = CAP_HEADER_SIZE
                + match u32::from(id) {
                    VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => 4,
                    VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION => 24,
                    _ => 8 + 16,
                };
            for cut in [
                INFO_HEADER_SIZE + CAP_HEADER_SIZE,
                INFO_HEADER_SIZE + need - 1,
            ] {
                assert_eq!(
                    parse_iommu_info(&full[..cut]),
                    Err(InfoParseError::TruncatedCap { id, offset: 24 }),
                    "cap {id} cut at {cut}"
                );
            }
            assert!(parse_iommu_info(&full[..INFO_HEADER_SIZE + need]).is_ok());
        }
    }

    #[test]
    fn nr_iovas_larger_than_buffer() {
        for nr in [3, 1000, u32::MAX] {
            let buf = info(0x1000, &[iova_range(nr, &[(0, 0xfff), (0x2000, 0x2fff)])]);
            assert_eq!(
                parse_iommu_info(&buf),
                Err(InfoParseError::TruncatedCap {
                    id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE as u16,
                    offset: 24
                })
            );
        }
        // nr_iovas smaller than what follows is fine: the rest is padding.
        let buf = info(0x1000, &[iova_range(1, &[(0, 0xfff), (0x2000, 0x2fff)])]);
        assert_eq!(
            parse_iommu_info(&buf).unwrap().iova_ranges,
            Some(vec![AddrRange::new(0, 0x1000)])
        );
    }

    #[test]
    fn inverted_range_and_duplicates() {
        let buf = info(0x1000, &[iova_range(1, &[(0x2000, 0x1fff)])]);
        assert_eq!(
            parse_iommu_info(&buf),
            Err(InfoParseError::InvertedRange {
                start: 0x2000,
                end: 0x1fff
            })
        );
        let buf = info(0x1000, &[dma_avail(1), dma_avail(2)]);
        assert_eq!(
            parse_iommu_info(&buf),
            Err(InfoParseError::DuplicateCap {
                id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL as u16
            })
        );
    }

    #[test]
    fn too_many_caps() {
        let caps: Vec<Cap> = (0..MAX_CAPS + 1)
            .map(|_| Cap {
                id: 0x100,
                body: vec![],
            })
            .collect();
        let buf = info(0x1000, &caps);
        assert_eq!(parse_iommu_info(&buf), Err(InfoParseError::TooManyCaps));
        assert!(parse_iommu_info(&info(0x1000, &caps[..MAX_CAPS])).is_ok());
    }

    #[test]
    fn every_prefix_and_corruption_is_handled() {
        // No input may panic: every prefix, and every single-byte corruption of the chain.
        let buf = normal();
        for len in 0..=buf.len() {
            let _ = parse_iommu_info(&buf[..len]);
        }
        for i in 0..buf.len() {
            for v in [0x00, 0x01, 0x08, 0x18, 0x7f, 0x80, 0xff] {
                let mut b = buf.clone();
                b[i] = v;
                let _ = parse_iommu_info(&b);
            }
        }
    }
}
