//! ONC RPC record marking over TCP (RFC 5531 §11): each record is one or more fragments, each
//! behind a 4-byte header whose top bit marks the last fragment and whose low 31 bits are its
//! length. Records over [`MAX_RECORD`] are refused before any of their bytes are buffered.

use std::io::{self, Read};

/// Largest record accepted: a 1 MiB WRITE plus its RPC and NFS headers.
pub const MAX_RECORD: usize = (1 << 20) + 4096;

/// How much a record's buffer grows per read while its bytes arrive.
const GROW_CHUNK: usize = 64 * 1024;

/// Why a connection's record stream ended.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The peer closed the connection between records.
    #[error("connection closed")]
    Closed,
    /// A record (or fragment) claims more than [`MAX_RECORD`] bytes.
    #[error("record of {0} bytes is over the {MAX_RECORD}-byte limit")]
    TooLarge(usize),
    /// The stream ended or failed inside a record.
    #[error("reading a record: {0}")]
    Io(#[from] io::Error),
}

/// The header of one fragment: last-fragment flag and length.
pub fn fragment_header(last: bool, len: usize) -> [u8; 4] {
    let value = (len as u32 & 0x7fff_ffff) | if last { 0x8000_0000 } else { 0 };
    value.to_be_bytes()
}

/// Reads one whole record into `record` (cleared first).
pub fn read_record(reader: &mut impl Read, record: &mut Vec<u8>) -> Result<(), RecordError> {
    record.clear();
    let mut first = true;
    loop {
        let mut header = [0u8; 4];
        if first {
            // A clean close between records is the normal end of a connection.
            match reader.read(&mut header[..1]) {
                Ok(0) => return Err(RecordError::Closed),
                Ok(_) => reader.read_exact(&mut header[1..])?,
                Err(e) => return Err(e.into()),
            }
        } else {
            reader.read_exact(&mut header)?;
        }
        first = false;
        let value = u32::from_be_bytes(header);
        let len = (value & 0x7fff_ffff) as usize;
        let total = record.len() + len;
        if total > MAX_RECORD {
            return Err(RecordError::TooLarge(total));
        }
        // Grow only as bytes arrive: a header claiming 1 MiB that is never followed by data
        // costs one chunk, not the whole claim.
        while record.len() < total {
            let start = record.len();
            record.resize(total.min(start + GROW_CHUNK), 0);
            reader.read_exact(&mut record[start..])?;
        }
        if value & 0x8000_0000 != 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_fragments_and_enforces_the_limit() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&fragment_header(false, 3));
        stream.extend_from_slice(b"abc");
        stream.extend_from_slice(&fragment_header(true, 2));
        stream.extend_from_slice(b"de");
        let mut reader = &stream[..];
        let mut record = Vec::new();
        read_record(&mut reader, &mut record).unwrap();
        assert_eq!(record, b"abcde");
        assert!(matches!(
            read_record(&mut reader, &mut record),
            Err(RecordError::Closed)
        ));

        let huge = fragment_header(true, MAX_RECORD + 1);
        assert!(matches!(
            read_record(&mut &huge[..], &mut record),
            Err(RecordError::TooLarge(_))
        ));
        let mut many = Vec::new();
        for _ in 0..2 {
            many.extend_from_slice(&fragment_header(false, MAX_RECORD / 2 + 1));
            many.extend(std::iter::repeat_n(0u8, MAX_RECORD / 2 + 1));
        }
        assert!(matches!(
            read_record(&mut &many[..], &mut record),
            Err(RecordError::TooLarge(_))
        ));
        // A header claiming a whole record, then nothing: the buffer grew by one chunk only.
        let mut record = Vec::new();
        let claim = fragment_header(true, MAX_RECORD - 8);
        assert!(matches!(
            read_record(&mut &claim[..], &mut record),
            Err(RecordError::Io(_))
        ));
        assert!(record.capacity() <= 2 * GROW_CHUNK, "{}", record.capacity());
        let truncated = [fragment_header(true, 10).as_slice(), b"abc"].concat();
        assert!(matches!(
            read_record(&mut &truncated[..], &mut record),
            Err(RecordError::Io(_))
        ));
    }
}
