//! A reader of raw BTF that answers from the bytes themselves: one offset per type is all it
//! builds. A full parse of vmlinux BTF holds tens of MiB for the dozen questions memstall asks.
use anyhow::{Result, anyhow, bail};

const MAGIC: u16 = 0xeb9f;
const TYPE_HEADER: usize = 12;

/// The BTF kinds (include/uapi/linux/btf.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
}

impl Kind {
    fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte type header, for `vlen` entries.
    fn trailer(self, vlen: usize) -> usize {
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => 12,
            Self::Struct | Self::Union | Self::Datasec | Self::Enum64 => 12 * vlen,
            Self::Enum | Self::FuncProto => 8 * vlen,
            Self::Ptr
            | Self::Fwd
            | Self::Typedef
            | Self::Volatile
            | Self::Const
            | Self::Restrict
            | Self::Func
            | Self::Float
            | Self::TypeTag => 0,
        }
    }
}

/// BTF bytes and where each type starts in them.
pub struct RawBtf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Byte offset of type `id` is `offsets[id - 1]` (id 0 is void).
    offsets: Vec<u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32> {
    let bytes = data
        .get(at..at + 4)
        .ok_or_else(|| anyhow!("BTF truncated at byte {at}"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// One type: its kind, name, vlen, size-or-type word and the bytes after its header.
#[derive(Clone, Copy)]
pub struct Type<'a> {
    pub kind: Kind,
    pub name_off: u32,
    pub vlen: usize,
    kind_flag: bool,
    /// The size of a struct, union, enum or int; the referenced type of the others.
    pub size_or_type: u32,
    trailer: &'a [u8],
}

/// A struct or union member.
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
}

impl Type<'_> {
    fn word(&self, index: usize) -> u32 {
        // The trailer's length was checked against vlen when the type was read.
        u32_at(self.trailer, index * 4).unwrap_or(0)
    }

    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let n = if matches!(self.kind, Kind::Struct | Kind::Union) {
            self.vlen
        } else {
            0
        };
        (0..n).map(move |i| {
            let offset = self.word(3 * i + 2);
            Member {
                name_off: self.word(3 * i),
                type_id: self.word(3 * i + 1),
                // With kind_flag, the top 8 bits are a bitfield's size.
                bit_offset: if self.kind_flag {
                    offset & 0x00ff_ffff
                } else {
                    offset
                },
            }
        })
    }

    /// Enumerators as (name offset, value) of an enum or a 64-bit enum (low 32 bits).
    pub fn enumerators(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let (n, stride) = match self.kind {
            Kind::Enum => (self.vlen, 2),
            Kind::Enum64 => (self.vlen, 3),
            _ => (0, 2),
        };
        (0..n).map(move |i| (self.word(stride * i), self.word(stride * i + 1)))
    }

    /// Parameter types of a function prototype.
    pub fn parameters(&self) -> impl Iterator<Item = u32> + '_ {
        let n = if self.kind == Kind::FuncProto {
            self.vlen
        } else {
            0
        };
        (0..n).map(move |i| self.word(2 * i + 1))
    }

    /// An array's element type and length.
    pub fn array(&self) -> Option<(u32, u32)> {
        (self.kind == Kind::Array).then(|| (self.word(0), self.word(2)))
    }
}

impl RawBtf {
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let magic = data
            .get(..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| anyhow!("BTF shorter than its header"))?;
        if magic != MAGIC {
            bail!("not little-endian BTF (magic {magic:#06x})");
        }
        let header_len = u32_at(&data, 4)? as usize;
        let section = |off_at: usize, len_at: usize| -> Result<std::ops::Range<usize>> {
            let start = header_len
                .checked_add(u32_at(&data, off_at)? as usize)
                .ok_or_else(|| anyhow!("BTF section offset overflows"))?;
            let end = start
                .checked_add(u32_at(&data, len_at)? as usize)
                .filter(|&end| end <= data.len())
                .ok_or_else(|| anyhow!("BTF section runs past the end"))?;
            Ok(start..end)
        };
        let types = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut offsets = Vec::new();
        let mut at = types.start;
        while at < types.end {
            let info = u32_at(&data, at + 4)?;
            let kind = Kind::from_raw((info >> 24) & 0x1f)
                .ok_or_else(|| anyhow!("unknown BTF kind {} at byte {at}", (info >> 24) & 0x1f))?;
            let next = at + TYPE_HEADER + kind.trailer((info & 0xffff) as usize);
            if next > types.end {
                bail!("BTF type at byte {at} runs past the type section");
            }
            offsets.push(u32::try_from(at).map_err(|_| anyhow!("BTF too large"))?);
            at = next;
        }
        offsets.shrink_to_fit();
        Ok(Self {
            data,
            strings,
            offsets,
        })
    }

    pub fn type_count(&self) -> u32 {
        self.offsets.len() as u32
    }

    pub fn ty(&self, id: u32) -> Result<Type<'_>> {
        let at = *id
            .checked_sub(1)
            .and_then(|i| self.offsets.get(i as usize))
            .ok_or_else(|| anyhow!("BTF type id {id} out of range"))? as usize;
        let info = u32_at(&self.data, at + 4)?;
        let kind = Kind::from_raw((info >> 24) & 0x1f).ok_or_else(|| anyhow!("bad BTF kind"))?;
        let vlen = (info & 0xffff) as usize;
        let start = at + TYPE_HEADER;
        let trailer = self
            .data
            .get(start..start + kind.trailer(vlen))
            .ok_or_else(|| anyhow!("BTF type {id} truncated"))?;
        Ok(Type {
            kind,
            name_off: u32_at(&self.data, at)?,
            vlen,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(&self.data, at + 8)?,
            trailer,
        })
    }

    /// The NUL-terminated string at `offset` of the string section ("" if it is not UTF-8).
    pub fn name(&self, offset: u32) -> Result<&str> {
        let strings = &self.data[self.strings.clone()];
        let tail = strings
            .get(offset as usize..)
            .ok_or_else(|| anyhow!("BTF string offset {offset} out of range"))?;
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| anyhow!("BTF string at {offset} not terminated"))?;
        Ok(std::str::from_utf8(&tail[..end]).unwrap_or(""))
    }

    /// Every type, in id order (unreadable ones skipped; `parse` has checked each).
    pub fn types(&self) -> impl Iterator<Item = Type<'_>> {
        (1..=self.type_count()).filter_map(|id| self.ty(id).ok())
    }

    /// The first type of `kind` named `name`.
    pub fn find(&self, name: &str, kind: Kind) -> Option<Type<'_>> {
        self.types()
            .find(|t| t.kind == kind && self.name(t.name_off).is_ok_and(|n| n == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BTF with: 1 int "int" (4 bytes), 2 struct "s" { int a @0; int b:3 @32 (bitfield) },
    /// 3 typedef "t" -> 2, 4 enum { X = 7 }, 5 func proto (int, int), 6 func "f" -> 5.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0t\0X\0f\0";
        let name = |s: &str| -> u32 {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let info = |kind: u32, vlen: u32, flag: bool| (u32::from(flag) << 31) | (kind << 24) | vlen;
        let mut types: Vec<u32> = Vec::new();
        types.extend([name("int"), info(1, 0, false), 4, 32]);
        types.extend([name("s"), info(4, 2, true), 8]);
        types.extend([name("a"), 1, 0]);
        types.extend([name("b"), 1, (3 << 24) | 32]);
        types.extend([name("t"), info(8, 0, false), 2]);
        types.extend([0, info(6, 1, false), 4, name("X"), 7]);
        types.extend([0, info(13, 2, false), 1, 0, 1, 0, 1]);
        types.extend([name("f"), info(12, 0, false), 5]);
        let types: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut data = Vec::new();
        data.extend(0xeb9fu16.to_le_bytes());
        data.extend([1u8, 0]);
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend(word.to_le_bytes());
        }
        data.extend(types);
        data.extend(strings);
        data
    }

    #[test]
    fn reads_types_members_enums_and_functions() {
        let btf = RawBtf::parse(sample()).unwrap();
        assert_eq!(btf.type_count(), 6);
        let st = btf.find("s", Kind::Struct).unwrap();
        assert_eq!(st.size_or_type, 8);
        let members: Vec<(String, u32, u32)> = st
            .members()
            .map(|m| {
                (
                    btf.name(m.name_off).unwrap().to_owned(),
                    m.type_id,
                    m.bit_offset,
                )
            })
            .collect();
        assert_eq!(members, [("a".into(), 1, 0), ("b".into(), 1, 32)]);
        let typedef = btf.find("t", Kind::Typedef).unwrap();
        assert_eq!(typedef.size_or_type, 2);
        let en = btf.ty(4).unwrap();
        let values: Vec<(&str, u32)> = en
            .enumerators()
            .map(|(n, v)| (btf.name(n).unwrap(), v))
            .collect();
        assert_eq!(values, [("X", 7)]);
        let func = btf.find("f", Kind::Func).unwrap();
        let proto = btf.ty(func.size_or_type).unwrap();
        assert_eq!(proto.parameters().collect::<Vec<_>>(), [1, 1]);
        assert!(btf.find("f", Kind::Struct).is_none());
        assert!(btf.ty(0).is_err() && btf.ty(7).is_err());
    }

    #[test]
    fn malformed_btf_is_an_error_not_a_panic() {
        let good = sample();
        for cut in 0..good.len() {
            let _ = RawBtf::parse(good[..cut].to_vec());
        }
        let mut bad_kind = good.clone();
        bad_kind[24 + 7] = 0x7f; // first type's kind byte
        assert!(RawBtf::parse(bad_kind).is_err());
        let mut big_endian = good;
        big_endian[..2].copy_from_slice(&0xeb9fu16.to_be_bytes());
        assert!(RawBtf::parse(big_endian).is_err());
    }
}
