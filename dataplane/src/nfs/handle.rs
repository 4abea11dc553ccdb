//! NFS file handles: `ZN` magic, a format version, the share id, the inode number and a
//! generation (from the file's birth time), 20 bytes in all. They name a file, not a path,
//! so they survive renames and server restarts; see `vfs.rs` for how they are resolved.

/// Bytes in a handle.
pub const HANDLE_LEN: usize = 20;
const MAGIC: [u8; 2] = *b"ZN";
const VERSION: u8 = 1;

/// A decoded file handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileHandle {
    /// Which share (a hash of the share's name and root inode).
    pub share_id: u32,
    /// Inode number.
    pub ino: u64,
    /// Generation: tells a file from a later one that reuses its inode number.
    pub generation: u32,
}

impl FileHandle {
    /// The wire form.
    pub fn encode(&self) -> [u8; HANDLE_LEN] {
        let mut out = [0u8; HANDLE_LEN];
        out[..2].copy_from_slice(&MAGIC);
        out[2] = VERSION;
        out[4..8].copy_from_slice(&self.share_id.to_be_bytes());
        out[8..16].copy_from_slice(&self.ino.to_be_bytes());
        out[16..20].copy_from_slice(&self.generation.to_be_bytes());
        out
    }

    /// Parses the wire form; `None` for anything this server did not issue (BADHANDLE).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != HANDLE_LEN || bytes[..2] != MAGIC || bytes[2] != VERSION || bytes[3] != 0
        {
            return None;
        }
        let word = |r: std::ops::Range<usize>| {
            bytes[r]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
        };
        Some(Self {
            share_id: word(4..8) as u32,
            ino: word(8..16),
            generation: word(16..20) as u32,
        })
    }
}

/// FNV-1a, 64 bits: a stable hash (share ids, directory cookies) that never changes between
/// builds, unlike the standard library's.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_handles() {
        let h = FileHandle {
            share_id: 7,
            ino: 1 << 40,
            generation: 9,
        };
        assert_eq!(FileHandle::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(FileHandle::decode(&bad), None);
        assert_eq!(FileHandle::decode(&h.encode()[..19]), None);
        assert_eq!(FileHandle::decode(&[]), None);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
