//! A bound on multipart part headers. The multipart parser buffers a part's
//! headers whole until their blank line, so one 64 MiB header line would cost
//! 64 MiB (or more) per upload. This watches the body as it streams past, before
//! the parser, and ends it with [`PartHeadersTooLong`] once a part's headers run
//! past [`MAX_PART_HEADER_BYTES`].

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use memchr::memmem;

/// Longest part header block accepted (the lines between a boundary and the
/// blank line): real clients send well under 1 KiB.
pub const MAX_PART_HEADER_BYTES: usize = 8 * 1024;

/// Why a body was cut short.
#[derive(Debug, thiserror::Error)]
#[error("a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes")]
pub struct PartHeadersTooLong;

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// `body`, ended with [`PartHeadersTooLong`] if a part's headers are too long.
pub fn guard(body: Body, boundary: &str) -> Body {
    let mut scanner = Scanner::new(boundary);
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(axum::BoxError::from)?;
        scanner.scan(&chunk)?;
        Ok::<Bytes, axum::BoxError>(chunk)
    });
    Body::from_stream(stream)
}

/// Where the scan is: in a part's content (looking for the next delimiter) or in
/// its headers (counting bytes up to the blank line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Content,
    Headers { seen: usize },
}

/// Finds delimiters and header ends across chunk edges, keeping only the last few
/// bytes of the previous chunk.
struct Scanner {
    /// `\r\n--<boundary>`.
    delimiter: Vec<u8>,
    place: Place,
    /// The previous chunks' last bytes, fewer than the needle being looked for.
    carry: Vec<u8>,
}

const HEADERS_END: &[u8] = b"\r\n\r\n";

impl Scanner {
    fn new(boundary: &str) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        Self {
            delimiter,
            place: Place::Content,
            // The body's first delimiter has no line break before it.
            carry: b"\r\n".to_vec(),
        }
    }

    fn scan(&mut self, mut rest: &[u8]) -> Result<(), PartHeadersTooLong> {
        while !rest.is_empty() {
            match self.place {
                Place::Content => match find_end(&self.carry, rest, &self.delimiter) {
                    Some(end) => {
                        self.place = Place::Headers { seen: 0 };
                        self.carry.clear();
                        rest = &rest[end..];
                    }
                    None => {
                        keep_tail(&mut self.carry, rest, self.delimiter.len() - 1);
                        rest = &[];
                    }
                },
                Place::Headers { seen } => match find_end(&self.carry, rest, HEADERS_END) {
                    Some(end) => {
                        if seen + end > MAX_PART_HEADER_BYTES {
                            return Err(PartHeadersTooLong);
                        }
                        self.place = Place::Content;
                        self.carry.clear();
                        rest = &rest[end..];
                    }
                    None => {
                        let seen = seen + rest.len();
                        if seen > MAX_PART_HEADER_BYTES {
                            return Err(PartHeadersTooLong);
                        }
                        self.place = Place::Headers { seen };
                        keep_tail(&mut self.carry, rest, HEADERS_END.len() - 1);
                        rest = &[];
                    }
                },
            }
        }
        Ok(())
    }
}

/// Where in `rest` the first `needle` that ends in it ends, counting one that
/// starts in `carry` (the stream's bytes just before `rest`).
fn find_end(carry: &[u8], rest: &[u8], needle: &[u8]) -> Option<usize> {
    if !carry.is_empty() {
        let head = &rest[..rest.len().min(needle.len() - 1)];
        let window = [carry, head].concat();
        if let Some(start) = memmem::find(&window, needle).filter(|&s| s < carry.len()) {
            return Some(start + needle.len() - carry.len());
        }
    }
    memmem::find(rest, needle).map(|start| start + needle.len())
}

/// Keeps the last `keep` bytes of `carry` followed by `rest`.
fn keep_tail(carry: &mut Vec<u8>, rest: &[u8], keep: usize) {
    if rest.len() >= keep {
        carry.clear();
        carry.extend_from_slice(&rest[rest.len() - keep..]);
    } else {
        carry.extend_from_slice(rest);
        let excess = carry.len().saturating_sub(keep);
        carry.drain(..excess);
    }
}

/// A stream's error, if it is this one somewhere down its chain of sources.
pub fn is_too_long(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<PartHeadersTooLong>() {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(header_pad: usize, content: &[u8]) -> Vec<u8> {
        let mut body =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
                .to_vec();
        body.extend_from_slice(format!("X-Pad: {}\r\n\r\n", "a".repeat(header_pad)).as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"mode\"\r\n\r\nfast\r\n--XyZ--\r\n");
        body
    }

    /// Scans `body` cut at `cuts` (positions, any order).
    fn scan_in_pieces(body: &[u8], cuts: &[usize]) -> Result<(), PartHeadersTooLong> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.extend([0, body.len()]);
        cuts.sort_unstable();
        let mut scanner = Scanner::new("XyZ");
        for pair in cuts.windows(2) {
            scanner.scan(&body[pair[0]..pair[1]])?;
        }
        Ok(())
    }

    #[test]
    fn reads_the_boundary_parameter() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(
            boundary("multipart/form-data;charset=utf-8; Boundary=x").as_deref(),
            Some("x")
        );
        assert_eq!(boundary("multipart/form-data"), None);
    }

    proptest! {
        /// Content that looks like headers (no delimiter before it) never counts,
        /// however the body is cut; headers just under the limit pass and just over fail.
        #[test]
        fn only_header_blocks_count(cuts in proptest::collection::vec(0usize..40_000, 0..8)) {
            let content = vec![b'h'; 30_000];
            let ok = body(MAX_PART_HEADER_BYTES - 200, &content);
            prop_assert!(scan_in_pieces(&ok, &cuts).is_ok());
            let too_long = body(MAX_PART_HEADER_BYTES, &content);
            prop_assert!(scan_in_pieces(&too_long, &cuts).is_err());
        }
    }

    #[test]
    fn a_delimiter_split_across_chunks_is_found() {
        // The second part's headers are long: only found if the delimiter before
        // them, cut in two, is recognised.
        let mut body = b"--XyZ\r\nA: b\r\n\r\ncontent\r\n--X".to_vec();
        let second = format!("yZ\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_PART_HEADER_BYTES));
        let mut scanner = Scanner::new("XyZ");
        scanner.scan(&body).unwrap();
        assert!(scanner.scan(second.as_bytes()).is_err());
        body.extend_from_slice(second.as_bytes());
        assert!(scan_in_pieces(&body, &[]).is_err());
    }
}
