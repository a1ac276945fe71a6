//! [`Encoder`]: writes values in the byte layout `arbitrary` 1.x decodes them from, so tests
//! can build seed inputs for the targets (the inverse of the derives they use).

/// Bytes in `arbitrary`'s layout: integers little-endian, `bool` one byte, an enum variant
/// as the `u32` the derive maps to it, `Option` a `bool` then the value.
#[derive(Clone, Debug, Default)]
pub struct Encoder(Vec<u8>);

impl Encoder {
    /// An empty input.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// One `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    /// One `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// One `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// One `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// One `bool`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Variant `index` of an enum of `count` variants: the derive picks
    /// `(u32 × count) >> 32`, so the smallest `u32` mapping to `index` is written.
    pub fn variant(&mut self, index: u32, count: u32) -> &mut Self {
        let v = (u64::from(index) << 32).div_ceil(u64::from(count.max(1)));
        self.u32(v as u32)
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}
