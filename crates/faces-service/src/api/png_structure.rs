//! Checks a PNG's chunk structure while the upload streams in, making the checks
//! Pillow's `verify` makes: signature, every chunk's length and CRC, and an `IEND`
//! at the end. No pixel is decoded, nothing is kept but a few bytes of state.

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
/// The PNG specification's bound on a chunk's length.
const MAX_CHUNK_LENGTH: u32 = (1 << 31) - 1;

/// What the bytes so far say about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A PNG whose chunks so far are whole and whose CRCs match, ending in `IEND`.
    Whole,
    /// Not (yet) whole: cut short, a bad CRC, or no `IEND`.
    Broken,
    /// Does not start with the PNG signature; another check decides.
    NotPng,
}

#[derive(Debug)]
enum State {
    Signature {
        seen: usize,
    },
    /// Length and type of the next chunk.
    ChunkHeader {
        bytes: [u8; 8],
        seen: usize,
    },
    Data {
        remaining: u32,
        iend: bool,
    },
    Crc {
        bytes: [u8; 4],
        seen: usize,
        iend: bool,
    },
    /// After `IEND`: trailing bytes are ignored, as decoders do.
    Ended,
    Broken,
    NotPng,
}

/// Fed the upload chunk by chunk; asked for a [`Verdict`] at the end.
#[derive(Debug)]
pub struct PngStructure {
    state: State,
    crc: crc32fast::Hasher,
}

impl Default for PngStructure {
    fn default() -> Self {
        Self {
            state: State::Signature { seen: 0 },
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl PngStructure {
    pub fn update(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            input = self.step(input);
        }
    }

    /// Consumes what the current state can use and returns the rest.
    fn step<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        match &mut self.state {
            State::Signature { seen } => {
                let take = (SIGNATURE.len() - *seen).min(input.len());
                if input[..take] != SIGNATURE[*seen..*seen + take] {
                    self.state = State::NotPng;
                    return &[];
                }
                *seen += take;
                if *seen == SIGNATURE.len() {
                    self.state = State::ChunkHeader {
                        bytes: [0; 8],
                        seen: 0,
                    };
                }
                &input[take..]
            }
            State::ChunkHeader { bytes, seen } => {
                let take = (8 - *seen).min(input.len());
                bytes[*seen..*seen + take].copy_from_slice(&input[..take]);
                *seen += take;
                if *seen == 8 {
                    let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let kind = [bytes[4], bytes[5], bytes[6], bytes[7]];
                    if length > MAX_CHUNK_LENGTH || !kind.iter().all(u8::is_ascii_alphabetic) {
                        self.state = State::Broken;
                        return &[];
                    }
                    self.crc = crc32fast::Hasher::new();
                    self.crc.update(&kind);
                    let iend = &kind == b"IEND";
                    self.state = if length == 0 {
                        State::Crc {
                            bytes: [0; 4],
                            seen: 0,
                            iend,
                        }
                    } else {
                        State::Data {
                            remaining: length,
                            iend,
                        }
                    };
                }
                &input[take..]
            }
            State::Data { remaining, iend } => {
                let take = (*remaining as usize).min(input.len());
                self.crc.update(&input[..take]);
                *remaining -= take as u32;
                if *remaining == 0 {
                    self.state = State::Crc {
                        bytes: [0; 4],
                        seen: 0,
                        iend: *iend,
                    };
                }
                &input[take..]
            }
            State::Crc { bytes, seen, iend } => {
                let take = (4 - *seen).min(input.len());
                bytes[*seen..*seen + take].copy_from_slice(&input[..take]);
                *seen += take;
                if *seen == 4 {
                    let expected = u32::from_be_bytes(*bytes);
                    let actual = std::mem::take(&mut self.crc).finalize();
                    self.state = if expected != actual {
                        State::Broken
                    } else if *iend {
                        State::Ended
                    } else {
                        State::ChunkHeader {
                            bytes: [0; 8],
                            seen: 0,
                        }
                    };
                }
                &input[take..]
            }
            State::Ended | State::Broken | State::NotPng => &[],
        }
    }

    pub fn verdict(&self) -> Verdict {
        match self.state {
            State::Ended => Verdict::Whole,
            State::NotPng => Verdict::NotPng,
            // Fewer bytes than a signature cannot be a PNG; the sniffer refuses them.
            State::Signature { .. } => Verdict::NotPng,
            _ => Verdict::Broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real PNG written by the `image` crate: two IDAT-bearing pixels and IEND.
    fn png() -> Vec<u8> {
        let image = image::RgbImage::from_pixel(3, 2, image::Rgb([200, 10, 10]));
        let mut bytes = Vec::new();
        image
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    fn verdict_in_pieces(bytes: &[u8], piece: usize) -> Verdict {
        let mut check = PngStructure::default();
        for part in bytes.chunks(piece) {
            check.update(part);
        }
        check.verdict()
    }

    #[test]
    fn a_whole_png_is_whole_however_it_is_split() {
        let bytes = png();
        for piece in [1, 2, 3, 7, 13, bytes.len()] {
            assert_eq!(verdict_in_pieces(&bytes, piece), Verdict::Whole, "{piece}");
        }
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"trailing bytes");
        assert_eq!(verdict_in_pieces(&trailing, 5), Verdict::Whole);
    }

    #[test]
    fn truncated_missing_iend_and_bad_crc_are_broken() {
        let bytes = png();
        for cut in [9, 20, 33, bytes.len() - 1] {
            assert_eq!(
                verdict_in_pieces(&bytes[..cut], 4),
                Verdict::Broken,
                "{cut}"
            );
        }
        // IEND is the last 12 bytes.
        assert_eq!(
            verdict_in_pieces(&bytes[..bytes.len() - 12], 4),
            Verdict::Broken
        );
        let mut corrupted = bytes.clone();
        corrupted[8 + 8 + 2] ^= 0x40; // inside IHDR's data
        assert_eq!(verdict_in_pieces(&corrupted, 4), Verdict::Broken);
    }

    #[test]
    fn other_formats_are_left_to_other_checks() {
        assert_eq!(
            verdict_in_pieces(b"GIF89a\x01\x00\x01\x00", 3),
            Verdict::NotPng
        );
        assert_eq!(verdict_in_pieces(b"\x89PN", 3), Verdict::NotPng);
    }
}
