//! A reader for dlib's own serialisation (`dlib/serialize.h`), enough for the two
//! model files: dlib integers, its portable floats, strings, matrices and dnn tensors.
//! docs/design/recognition-research.md has the rules with examples from the files.

use crate::DetectError;

/// A cursor over a model file's bytes; every read checks the bounds and fails with
/// the position rather than panicking.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

pub(super) type Result<T> = std::result::Result<T, DetectError>;

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub(super) fn error(&self, what: &str) -> DetectError {
        DetectError::Inference(format!("dlib model at byte {}: {what}", self.at))
    }

    pub(super) fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| self.error("unexpected end of file"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// A dlib integer: a control byte (bit 7: negative; low 4 bits: byte count 1..8),
    /// then the magnitude little-endian.
    pub(super) fn int(&mut self) -> Result<i64> {
        let control = self.take(1)?[0];
        let size = (control & 0x0f) as usize;
        if size == 0 || size > 8 {
            return Err(self.error("bad integer size"));
        }
        let magnitude = self
            .take(size)?
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let magnitude = i64::try_from(magnitude).map_err(|_| self.error("integer overflow"))?;
        Ok(if control & 0x80 != 0 {
            -magnitude
        } else {
            magnitude
        })
    }

    /// A non-negative integer used as a count or index.
    pub(super) fn count(&mut self) -> Result<usize> {
        let v = self.int()?;
        usize::try_from(v).map_err(|_| self.error("negative count"))
    }

    /// Expects the integer `want` (a version number or a known size).
    pub(super) fn expect_int(&mut self, want: i64, what: &str) -> Result<()> {
        let got = self.int()?;
        if got != want {
            return Err(self.error(&format!("{what}: expected {want}, found {got}")));
        }
        Ok(())
    }

    /// A float as dlib writes it: mantissa and exponent, `mantissa * 2^exponent`.
    pub(super) fn float(&mut self) -> Result<f32> {
        let mantissa = self.int()?;
        let exponent = self.int()?;
        Ok(match exponent {
            32000 => f32::INFINITY,
            32001 => f32::NEG_INFINITY,
            32002 => f32::NAN,
            e => {
                let e = i32::try_from(e).map_err(|_| self.error("float exponent"))?;
                (mantissa as f64 * 2f64.powi(e)) as f32
            }
        })
    }

    /// A bool: the byte `'1'` or `'0'`.
    pub(super) fn bool(&mut self) -> Result<bool> {
        match self.take(1)?[0] {
            b'1' => Ok(true),
            b'0' => Ok(false),
            _ => Err(self.error("bad bool")),
        }
    }

    pub(super) fn string(&mut self) -> Result<&'a str> {
        let len = self.count()?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.error("string is not UTF-8"))
    }

    pub(super) fn expect_tag(&mut self, tags: &[&str]) -> Result<&'a str> {
        let tag = self.string()?;
        if !tags.contains(&tag) {
            return Err(self.error(&format!("expected {tags:?}, found {tag:?}")));
        }
        Ok(tag)
    }

    /// A `matrix<float>`: rows and columns (written negated), then the elements row by row.
    pub(super) fn float_matrix(&mut self) -> Result<(usize, usize, Vec<f32>)> {
        let rows = self.int()?.unsigned_abs() as usize;
        let cols = self.int()?.unsigned_abs() as usize;
        let n = rows
            .checked_mul(cols)
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| self.error("matrix too large"))?;
        let values = (0..n).map(|_| self.float()).collect::<Result<_>>()?;
        Ok((rows, cols, values))
    }

    /// A dnn tensor: version 2, its shape (samples, k, rows, columns), then raw
    /// little-endian f32 values.
    pub(super) fn tensor(&mut self) -> Result<([usize; 4], Vec<f32>)> {
        self.expect_int(2, "tensor version")?;
        let shape = [self.count()?, self.count()?, self.count()?, self.count()?];
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= self.bytes.len() / 4)
            .ok_or_else(|| self.error("tensor too large"))?;
        let raw = self.take(n * 4)?;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((shape, values))
    }

    /// An empty tensor (the gradients and caches a trained network still writes).
    pub(super) fn empty_tensor(&mut self) -> Result<()> {
        let (shape, _) = self.tensor()?;
        if shape.iter().product::<usize>() != 0 {
            return Err(self.error("expected an empty tensor"));
        }
        Ok(())
    }

    /// An alias tensor: version 1 and a shape, no data.
    pub(super) fn alias_tensor(&mut self) -> Result<[usize; 4]> {
        self.expect_int(1, "alias tensor version")?;
        Ok([self.count()?, self.count()?, self.count()?, self.count()?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_floats_and_strings_read_as_dlib_writes_them() {
        // 1, -10, 0, the loss layer's margin 0.04 and threshold 0.6, "ab", '1'.
        let bytes = [
            0x01, 0x01, 0x81, 0x0a, 0x01, 0x00, 0x03, 0x0a, 0xd7, 0xa3, 0x81, 0x1c, 0x03, 0x9a,
            0x99, 0x99, 0x81, 0x18, 0x01, 0x02, b'a', b'b', b'1',
        ];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.int().unwrap(), 1);
        assert_eq!(r.int().unwrap(), -10);
        assert_eq!(r.int().unwrap(), 0);
        assert_eq!(r.float().unwrap(), 0.04);
        assert_eq!(r.float().unwrap(), 0.6);
        assert_eq!(r.string().unwrap(), "ab");
        assert!(r.bool().unwrap());
        assert!(r.at_end());
        assert!(
            r.int().is_err(),
            "reading past the end is an error, not a panic"
        );
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(Reader::new(&[0x00]).int().is_err());
        assert!(Reader::new(&[0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9])
            .int()
            .is_err());
        // A tensor claiming more values than the file holds.
        let mut r = Reader::new(&[
            0x01, 0x02, 0x02, 0xff, 0xff, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        ]);
        assert!(r.tensor().is_err());
    }
}
