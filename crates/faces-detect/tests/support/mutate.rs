//! Mutations of real image files for the fuzz tests of `faces-detect` and
//! `faces-service` (the service's test includes this file by path): bit flips,
//! byte overwrites, truncations, inserted, removed and duplicated runs, and format
//! header fields set to hostile values, with PNG checksums repaired so that the
//! damage reaches the decoder instead of failing the CRC check.
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;

/// Where a mutation lands: anywhere, or in the first KiB where the headers are.
#[derive(Debug, Clone)]
pub enum Pos {
    Anywhere(Index),
    Head(usize),
}

impl Pos {
    fn get(&self, len: usize) -> usize {
        match self {
            _ if len == 0 => 0,
            Pos::Anywhere(index) => index.index(len),
            Pos::Head(offset) => offset % len,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Pos, u8),
    Overwrite(Pos, Vec<u8>),
    Truncate(Pos),
    Insert(Pos, Vec<u8>),
    Remove(Pos, usize),
    /// Copies a run of the file elsewhere (repeated chunks, markers, segments).
    Duplicate(Pos, usize, Pos),
    /// Sets a header field of the file's format (by its magic) to `value`.
    HeaderField(u8, u32),
    /// Recomputes every PNG chunk CRC, so damage inside chunks reaches the decoder.
    FixPngCrcs,
}

pub fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        any::<Index>().prop_map(Pos::Anywhere),
        (0usize..1024).prop_map(Pos::Head),
    ]
}

pub fn hostile_value() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(7),
        Just(8),
        Just(16),
        Just(255),
        Just(256),
        Just(447),
        Just(448),
        Just(65_535),
        Just(65_536),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (pos(), 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        2 => (pos(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, v)| Mutation::Overwrite(p, v)),
        1 => pos().prop_map(Mutation::Truncate),
        1 => (pos(), prop::collection::vec(any::<u8>(), 1..64)).prop_map(|(p, v)| Mutation::Insert(p, v)),
        1 => (pos(), 1usize..256).prop_map(|(p, n)| Mutation::Remove(p, n)),
        1 => (pos(), 1usize..512, pos()).prop_map(|(a, n, b)| Mutation::Duplicate(a, n, b)),
        3 => (any::<u8>(), hostile_value()).prop_map(|(f, v)| Mutation::HeaderField(f, v)),
        1 => Just(Mutation::FixPngCrcs),
    ]
}

pub fn put_be(bytes: &mut [u8], at: usize, value: u32, width: usize) {
    let be = value.to_be_bytes();
    for (i, b) in be[4 - width..].iter().enumerate() {
        if let Some(slot) = bytes.get_mut(at + i) {
            *slot = *b;
        }
    }
}

pub fn put_le(bytes: &mut [u8], at: usize, value: u32, width: usize) {
    for (i, b) in value.to_le_bytes()[..width].iter().enumerate() {
        if let Some(slot) = bytes.get_mut(at + i) {
            *slot = *b;
        }
    }
}

pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub fn fix_png_crcs(bytes: &mut [u8]) {
    if !bytes.starts_with(b"\x89PNG") {
        return;
    }
    let mut at = 8;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e + 4 <= bytes.len()) else {
            return;
        };
        let crc = crc32(&bytes[at + 4..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// Sets header field number `field` (of those the format has) to `value`.
pub fn header_field(bytes: &mut [u8], field: u8, value: u32) {
    if bytes.starts_with(b"\x89PNG") {
        // IHDR: width, height (u32 BE), bit depth, colour type, compression, filter, interlace.
        let fields: [(usize, usize); 7] = [
            (16, 4),
            (20, 4),
            (24, 1),
            (25, 1),
            (26, 1),
            (27, 1),
            (28, 1),
        ];
        let (at, width) = fields[usize::from(field) % fields.len()];
        put_be(bytes, at, value, width);
        fix_png_crcs(bytes);
    } else if bytes.starts_with(b"GIF") {
        // Logical screen width, height (u16 LE), packed flags; then the first image descriptor.
        let descriptor = bytes.iter().position(|&b| b == 0x2c).unwrap_or(13);
        let fields: [(usize, usize); 6] = [
            (6, 2),
            (8, 2),
            (10, 1),
            (descriptor + 5, 2),
            (descriptor + 7, 2),
            (descriptor + 9, 1),
        ];
        let (at, width) = fields[usize::from(field) % fields.len()];
        put_le(bytes, at, value, width);
    } else if bytes.starts_with(b"\xff\xd8") {
        // The frame header (SOF0/1/2): precision, height, width, components; or a
        // segment length of any marker.
        let sof = bytes
            .windows(2)
            .position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1]));
        let markers: Vec<usize> = bytes
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] == 0xff && w[1] >= 0xc0 && w[1] != 0xff && w[1] != 0xd8)
            .map(|(i, _)| i)
            .take(32)
            .collect();
        match (field % 5, sof) {
            (0, Some(s)) => put_be(bytes, s + 4, value, 1),
            (1, Some(s)) => put_be(bytes, s + 5, value, 2),
            (2, Some(s)) => put_be(bytes, s + 7, value, 2),
            (3, Some(s)) => put_be(bytes, s + 9, value, 1),
            _ if !markers.is_empty() => {
                let at = markers[usize::from(field) % markers.len()];
                put_be(bytes, at + 2, value, 2);
            }
            _ => {}
        }
    } else if bytes.starts_with(b"BM") {
        // Width, height (i32 LE), bits per pixel, compression, palette size.
        let fields: [(usize, usize); 5] = [(18, 4), (22, 4), (28, 2), (30, 4), (46, 4)];
        let (at, width) = fields[usize::from(field) % fields.len()];
        put_le(bytes, at, value, width);
    } else if bytes.starts_with(b"RIFF") {
        // The RIFF size, the first chunk's size, and the VP8L/VP8 size bits.
        let fields: [(usize, usize); 4] = [(4, 4), (16, 4), (21, 4), (26, 2)];
        let (at, width) = fields[usize::from(field) % fields.len()];
        put_le(bytes, at, value, width);
    } else if bytes.starts_with(b"II") || bytes.starts_with(b"MM") {
        // The first IFD offset, or a value in the first IFD's entries.
        let at = 4 + usize::from(field) * 4 % 256;
        if bytes.starts_with(b"II") {
            put_le(bytes, at, value, 4);
        } else {
            put_be(bytes, at, value, 4);
        }
    } else if let Some(byte) = bytes.get_mut(usize::from(field)) {
        *byte = value as u8;
    }
}

pub fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::FlipBit(p, bit) if len > 0 => bytes[p.get(len)] ^= 1 << bit,
            Mutation::Overwrite(p, v) if len > 0 => {
                let at = p.get(len);
                let end = (at + v.len()).min(len);
                bytes[at..end].copy_from_slice(&v[..end - at]);
            }
            Mutation::Truncate(p) => bytes.truncate(p.get(len)),
            Mutation::Insert(p, v) => {
                let at = p.get(len);
                bytes.splice(at..at, v.iter().copied());
            }
            Mutation::Remove(p, n) => {
                let at = p.get(len);
                bytes.drain(at..(at + n).min(len));
            }
            Mutation::Duplicate(from, n, to) if len > 0 => {
                let at = from.get(len);
                let run = bytes[at..(at + n).min(len)].to_vec();
                let to = to.get(len);
                bytes.splice(to..to, run);
            }
            Mutation::HeaderField(field, value) => header_field(&mut bytes, *field, *value),
            Mutation::FixPngCrcs => fix_png_crcs(&mut bytes),
            _ => {}
        }
    }
    bytes
}
