//! Userspace only: ring-buffer bytes to typed records, and kernel comm bytes to text.
use crate::{
    EventHeader, EventKind, KillEvent, OomContextEvent, OomKillEvent, StallEvent, TASK_COMM_LEN,
};

/// Why a ring-buffer record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort { len: usize, need: usize },
    UnknownKind(u32),
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::TooShort { len, need } => {
                write!(f, "record of {len} bytes, expected at least {need}")
            }
            Self::UnknownKind(kind) => write!(f, "unknown event kind {kind}"),
        }
    }
}

/// A decoded kernel event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawEvent {
    OomKill(OomKillEvent),
    Stall(StallEvent),
    OomContext(OomContextEvent),
    Kill(KillEvent),
}

fn read<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    match bytes.get(..need) {
        Some(head) => Ok(bytemuck::pod_read_unaligned(head)),
        None => Err(DecodeError::TooShort {
            len: bytes.len(),
            need,
        }),
    }
}

impl RawEvent {
    /// Decodes one ring-buffer record; never panics on malformed input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: EventHeader = read(bytes)?;
        match EventKind::from_u32(header.kind) {
            Some(EventKind::OomKill) => read(bytes).map(Self::OomKill),
            Some(EventKind::Stall) => read(bytes).map(Self::Stall),
            Some(EventKind::OomContext) => read(bytes).map(Self::OomContext),
            Some(EventKind::Kill) => read(bytes).map(Self::Kill),
            None => Err(DecodeError::UnknownKind(header.kind)),
        }
    }
}

/// The text of a NUL-padded kernel `comm`.
pub fn comm_str(comm: &[u8; TASK_COMM_LEN]) -> CommStr<'_> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    CommStr(&comm[..end])
}

/// Borrowed comm bytes. Displays as UTF-8 with each byte that is not written `\xNN`, so a
/// name set with prctl from arbitrary bytes keeps them visible (JSON and terminal alike).
pub struct CommStr<'a>(&'a [u8]);

impl core::fmt::Display for CommStr<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}
