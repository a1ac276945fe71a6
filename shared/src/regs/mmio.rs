//! Glue between register-level models and `vm-device`'s MMIO bus traits.
//!
//! A model implements [`MmioHandler`] (accesses as `(offset, len, value)`); [`MmioAdapter`]
//! (behind a lock, for [`DeviceMmio`]) or [`MutMmioAdapter`] (for [`MutDeviceMmio`]) turn the
//! bus's byte buffers into values with a [`ByteOrder`]. Buffers whose length is not 1, 2, 4
//! or 8 never reach the model: writes are dropped, reads return zeros.
//!
//! ```
//! use std::sync::Arc;
//! use viommu_shared::regs::{ByteOrder, MmioAdapter, RegSpec, RegisterFile};
//! use vm_device::DeviceMmio;
//! use vm_device::bus::MmioAddress;
//!
//! static REGS: &[RegSpec] = &[RegSpec::rw32("SCRATCH", 0x0, 0, 0xffff_ffff)];
//! let dev = Arc::new(MmioAdapter::new(RegisterFile::new(REGS).unwrap(), ByteOrder::Little));
//! let base = MmioAddress(0xfed9_0000);
//!
//! dev.mmio_write(base, 0x0, &[0x78, 0x56, 0x34, 0x12]);
//! let mut data = [0u8; 2];
//! dev.mmio_read(base, 0x2, &mut data);
//! assert_eq!(data, [0x34, 0x12]);
//! assert_eq!(dev.lock().get_at(0x0), Some(0x1234_5678));
//! ```

use std::sync::{Mutex, MutexGuard, PoisonError};

use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::{DeviceMmio, MutDeviceMmio};

use super::file::RegisterFile;
use super::spec::{ByteOrder, is_access_len};

/// A device's register window seen as `(offset, len, value)` accesses.
///
/// `offset` is relative to the start of the window; `len` is 1, 2, 4 or 8 when called by the
/// adapters of this module, but implementations must not panic on other values.
pub trait MmioHandler {
    /// A guest read of `len` bytes at `offset`; the value's low `len` bytes are returned.
    fn mmio_read(&mut self, offset: u64, len: usize) -> u64;

    /// A guest write of the low `len` bytes of `value` at `offset`.
    fn mmio_write(&mut self, offset: u64, len: usize, value: u64);
}

/// A bare register file (no side effects) is a device: handy for tests and simple windows.
impl MmioHandler for RegisterFile {
    fn mmio_read(&mut self, offset: u64, len: usize) -> u64 {
        self.read(offset, len)
    }

    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) {
        // Rejected or unmapped accesses are simply dropped here.
        let _ = self.write(offset, len, value);
    }
}

impl<H: MmioHandler + ?Sized> MmioHandler for Box<H> {
    fn mmio_read(&mut self, offset: u64, len: usize) -> u64 {
        (**self).mmio_read(offset, len)
    }

    fn mmio_write(&mut self, offset: u64, len: usize, value: u64) {
        (**self).mmio_write(offset, len, value)
    }
}

fn read_into<H: MmioHandler + ?Sized>(
    handler: &mut H,
    order: ByteOrder,
    offset: u64,
    data: &mut [u8],
) {
    if !is_access_len(data.len()) {
        data.fill(0);
        return;
    }
    let value = handler.mmio_read(offset, data.len());
    order.encode(value, data);
}

fn write_from<H: MmioHandler + ?Sized>(
    handler: &mut H,
    order: ByteOrder,
    offset: u64,
    data: &[u8],
) {
    if let Some(value) = order.decode(data) {
        handler.mmio_write(offset, data.len(), value);
    }
}

/// An [`MmioHandler`] behind a mutex, usable as a shared `vm-device` [`DeviceMmio`]
/// (e.g. `Arc<MmioAdapter<Model>>` registered with an `IoManager`).
///
/// The `base` address passed by the bus is ignored; `offset` is relative to the device's
/// window. A poisoned lock is recovered rather than propagated as a panic.
#[derive(Debug)]
pub struct MmioAdapter<T> {
    inner: Mutex<T>,
    order: ByteOrder,
}

impl<T> MmioAdapter<T> {
    /// Wraps `inner`, decoding bus data in `order`.
    pub fn new(inner: T, order: ByteOrder) -> MmioAdapter<T> {
        MmioAdapter {
            inner: Mutex::new(inner),
            order,
        }
    }

    /// The byte order of bus data.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// Locks the wrapped handler (e.g. for the model to raise an event), recovering from
    /// poisoning.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The wrapped handler.
    pub fn into_inner(self) -> T {
        self.inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: MmioHandler> DeviceMmio for MmioAdapter<T> {
    fn mmio_read(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        read_into(&mut *self.lock(), self.order, offset, data);
    }

    fn mmio_write(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        write_from(&mut *self.lock(), self.order, offset, data);
    }
}

/// An [`MmioHandler`] owned without a lock, as a `vm-device` [`MutDeviceMmio`] (for a VMM
/// that does its own locking, or single-threaded use).
#[derive(Debug, Default)]
pub struct MutMmioAdapter<T> {
    inner: T,
    order: ByteOrder,
}

impl<T> MutMmioAdapter<T> {
    /// Wraps `inner`, decoding bus data in `order`.
    pub fn new(inner: T, order: ByteOrder) -> MutMmioAdapter<T> {
        MutMmioAdapter { inner, order }
    }

    /// The byte order of bus data.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped handler, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the handler.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: MmioHandler> MutDeviceMmio for MutMmioAdapter<T> {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        read_into(&mut self.inner, self.order, offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        write_from(&mut self.inner, self.order, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::spec::RegSpec;
    use std::sync::Arc;

    static REGS: &[RegSpec] = &[
        RegSpec::rw32("A", 0x0, 0, 0xffff_ffff),
        RegSpec::rw32("B", 0x4, 0, 0xffff_ffff),
        RegSpec::rw64("Q", 0x8, 0, u64::MAX),
        RegSpec::ro32("ID", 0x10, 0x0102_0304),
    ];
    const BASE: MmioAddress = MmioAddress(0x1000_0000);

    fn adapter(order: ByteOrder) -> Arc<MmioAdapter<RegisterFile>> {
        let regs = RegisterFile::with_byte_order(REGS, order).unwrap();
        Arc::new(MmioAdapter::new(regs, order))
    }

    fn read(dev: &dyn DeviceMmio, offset: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0xee; len];
        dev.mmio_read(BASE, offset, &mut data);
        data
    }

    #[test]
    fn round_trip_little_endian() {
        let dev = adapter(ByteOrder::Little);
        assert_eq!(dev.byte_order(), ByteOrder::Little);
        dev.mmio_write(BASE, 0x0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read(&*dev, 0x0, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read(&*dev, 0x4, 4), [5, 6, 7, 8]);
        assert_eq!(read(&*dev, 0x2, 2), [3, 4]);
        assert_eq!(read(&*dev, 0x7, 1), [8]);
        assert_eq!(dev.lock().get_at(0x0), Some(0x0403_0201));
        assert_eq!(dev.lock().get_at(0x4), Some(0x0807_0605));
        dev.mmio_write(BASE, 0xc, &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(dev.lock().get_at(0x8), Some(0xddcc_bbaa_0000_0000));
        assert_eq!(read(&*dev, 0x10, 4), [4, 3, 2, 1]);
        // Through vm-device's Arc blanket impl too.
        let as_dyn: Arc<dyn DeviceMmio + Send + Sync> = dev.clone();
        assert_eq!(read(&as_dyn, 0x12, 2), [2, 1]);
    }

    #[test]
    fn round_trip_big_endian() {
        let dev = adapter(ByteOrder::Big);
        dev.mmio_write(BASE, 0x0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read(&*dev, 0x0, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read(&*dev, 0x4, 4), [5, 6, 7, 8]);
        assert_eq!(read(&*dev, 0x2, 2), [3, 4]);
        assert_eq!(dev.lock().get_at(0x0), Some(0x0102_0304));
        assert_eq!(dev.lock().get_at(0x4), Some(0x0506_0708));
        dev.mmio_write(BASE, 0xc, &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(dev.lock().get_at(0x8), Some(0xaabb_ccdd));
        assert_eq!(read(&*dev, 0x10, 4), [1, 2, 3, 4]);
        assert_eq!(read(&*dev, 0x10, 1), [1]);
    }

    #[test]
    fn bad_lengths_and_offsets_are_harmless() {
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let dev = adapter(order);
            dev.mmio_write(BASE, 0x0, &[0xff; 4]);
            for len in [0, 3, 5, 7, 9, 16, 64] {
                dev.mmio_write(BASE, 0x0, &vec![0; len]);
                assert_eq!(read(&*dev, 0x0, len), vec![0; len]);
            }
            assert_eq!(dev.lock().get_at(0x0), Some(0xffff_ffff));
            // Misaligned and unmapped accesses: dropped, read as zeros.
            dev.mmio_write(BASE, 0x1, &[0; 2]);
            assert_eq!(read(&*dev, 0x1, 2), [0, 0]);
            assert_eq!(dev.lock().get_at(0x0), Some(0xffff_ffff));
            dev.mmio_write(BASE, u64::MAX, &[0]);
            assert_eq!(read(&*dev, u64::MAX - 7, 8), [0; 8]);
            assert_eq!(read(&*dev, 0x100, 4), [0; 4]);
        }
    }

    #[test]
    fn mut_adapter_and_boxed_handler() {
        let regs = RegisterFile::new(REGS).unwrap();
        let boxed: Box<dyn MmioHandler + Send> = Box::new(regs);
        let mut dev = MutMmioAdapter::new(boxed, ByteOrder::Little);
        assert_eq!(dev.byte_order(), ByteOrder::Little);
        MutDeviceMmio::mmio_write(&mut dev, BASE, 0x4, &[0x11, 0x22, 0x33, 0x44]);
        let mut data = [0u8; 4];
        MutDeviceMmio::mmio_read(&mut dev, BASE, 0x4, &mut data);
        assert_eq!(data, [0x11, 0x22, 0x33, 0x44]);
        let mut odd = [0xeeu8; 3];
        MutDeviceMmio::mmio_read(&mut dev, BASE, 0x4, &mut odd);
        assert_eq!(odd, [0; 3]);
        assert_eq!(dev.inner_mut().mmio_read(0x4, 2), 0x2211);
        dev.inner_mut().mmio_write(0x4, 1, 0x99);
        assert_eq!(dev.inner_mut().mmio_read(0x4, 4), 0x4433_2299);
        let _ = dev.inner();
        // vm-device's Mutex blanket impl makes the unlocked adapter shareable too.
        let shared: Arc<dyn DeviceMmio + Send + Sync> = Arc::new(Mutex::new(dev));
        assert_eq!(read(&shared, 0x4, 1), [0x99]);
    }

    #[test]
    fn poisoned_lock_is_recovered() {
        let dev = adapter(ByteOrder::Little);
        let d = dev.clone();
        let _ = std::thread::spawn(move || {
            let _guard = d.lock();
            panic!("poison");
        })
        .join();
        dev.mmio_write(BASE, 0x0, &[7, 0, 0, 0]);
        assert_eq!(read(&*dev, 0x0, 4), [7, 0, 0, 0]);
        let regs = Arc::try_unwrap(dev).unwrap().into_inner();
        assert_eq!(regs.get_at(0x0), Some(7));
        let plain = MutMmioAdapter::new(regs, ByteOrder::Big).into_inner();
        assert_eq!(plain.get_at(0x0), Some(7));
    }
}
