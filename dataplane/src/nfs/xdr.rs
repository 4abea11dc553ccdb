//! XDR (RFC 4506): big-endian 4-byte units, opaque data padded to 4 bytes. Pure and bounded:
//! every variable-length item is read against a caller-given maximum, so a hostile length
//! never allocates or reads past the record.

/// A decoding failure: the arguments are garbage (`GARBAGE_ARGS` in RPC terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The record ended in the middle of an item.
    #[error("truncated XDR data")]
    Truncated,
    /// A length is over the limit for that item.
    #[error("XDR length {len} is over the limit {max}")]
    TooLong {
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value outside its enumeration (e.g. a bool that is not 0 or 1).
    #[error("invalid XDR value for {0}")]
    Invalid(&'static str),
}

/// Reads XDR items from a byte slice.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes not read yet, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Byte offset of the next item.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if self.remaining() < n {
            return Err(XdrError::Truncated);
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    /// A boolean (0 or 1).
    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(XdrError::Invalid("bool")),
        }
    }

    /// Fixed-length opaque data of `len` bytes (plus padding).
    pub fn opaque_fixed(&mut self, len: usize) -> Result<&'a [u8], XdrError> {
        let data = self.take(padded(len))?;
        Ok(&data[..len])
    }

    /// Variable-length opaque data of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], XdrError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        self.opaque_fixed(len)
    }
}

/// Writes XDR items into a growing buffer.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    /// Fixed-length opaque data (plus padding).
    pub fn opaque_fixed(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf
            .resize(self.buf.len() + padded(data.len()) - data.len(), 0);
        self
    }

    /// Variable-length opaque data (length, bytes, padding).
    pub fn opaque(&mut self, data: &[u8]) -> &mut Self {
        self.u32(data.len() as u32);
        self.opaque_fixed(data)
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Mutable access, for callers that patch a length written earlier.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let mut e = Encoder::default();
        e.u32(7)
            .u64(1 << 40)
            .bool(true)
            .opaque(b"abcde")
            .opaque_fixed(b"xy");
        let bytes = e.into_bytes();
        assert_eq!(bytes.len(), 4 + 8 + 4 + 4 + 8 + 4);
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u32().unwrap(), 7);
        assert_eq!(d.u64().unwrap(), 1 << 40);
        assert!(d.bool().unwrap());
        assert_eq!(d.opaque(16).unwrap(), b"abcde");
        assert_eq!(d.opaque_fixed(2).unwrap(), b"xy");
        assert_eq!(d.remaining(), 0);
        assert_eq!(d.u32(), Err(XdrError::Truncated));
    }

    #[test]
    fn hostile_lengths_are_refused_without_reading() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
        assert!(matches!(
            Decoder::new(&bytes).opaque(1024),
            Err(XdrError::TooLong { .. })
        ));
        let bytes = [0, 0, 0, 8, 1, 2, 3, 4];
        assert_eq!(Decoder::new(&bytes).opaque(1024), Err(XdrError::Truncated));
        assert_eq!(
            Decoder::new(&[0, 0, 0, 2]).bool(),
            Err(XdrError::Invalid("bool"))
        );
    }
}
