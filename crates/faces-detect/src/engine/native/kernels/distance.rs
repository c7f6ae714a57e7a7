//! Squared Euclidean distances from one vector to many (face embeddings), with
//! its scalar twin.

use super::super::isa::{Isa, IsaKind};

/// `out[i]` = the squared distance from `query` to the i-th of `stored`, each as
/// long as `query`.
pub(crate) fn squared_distances<'a>(
    isa: Isa,
    query: &[f32],
    stored: impl Iterator<Item = &'a [f32]>,
    out: &mut Vec<f32>,
) {
    out.clear();
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind `Avx2Fma` or `Avx512` is only made where the CPU
        // has AVX2 and FMA; `squared_avx2` checks the lengths.
        IsaKind::Avx2Fma | IsaKind::Avx512 => {
            out.extend(stored.map(|row| unsafe { squared_avx2(query, row) }))
        }
        _ => out.extend(stored.map(|row| squared_scalar(query, row))),
    }
}

/// The scalar twin: one float at a time.
pub(super) fn squared_scalar(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn squared_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    assert_eq!(a.len(), b.len());
    let whole = a.len() / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); 2];
    for (i, at) in (0..whole).step_by(8).enumerate() {
        // SAFETY: at + 8 <= whole <= the length of both slices.
        let (x, y) = (
            _mm256_loadu_ps(a.as_ptr().add(at)),
            _mm256_loadu_ps(b.as_ptr().add(at)),
        );
        let d = _mm256_sub_ps(x, y);
        acc[i % 2] = _mm256_fmadd_ps(d, d, acc[i % 2]);
    }
    let sum = _mm256_add_ps(acc[0], acc[1]);
    let halves = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    let pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
    let total = _mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1));
    _mm_cvtss_f32(total) + squared_scalar(&a[whole..], &b[whole..])
}
