//! Which instruction set the kernels run, as a token: an [`Isa`] is made only by
//! [`Isa::detect`] and [`Isa::available`], which ask the CPU, or as
//! [`Isa::scalar`], which runs everywhere. So no code can ask a kernel for
//! instructions the CPU lacks; the kernels' `unsafe` blocks rely on this.

/// A checked instruction set; match on [`Isa::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Isa(IsaKind);

/// What an [`Isa`] is. Making one of these proves nothing: kernels take [`Isa`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IsaKind {
    /// AVX2 + FMA, x86-64 only.
    Avx2Fma,
    /// AVX-512 F + DQ beside AVX2 + FMA: the dense kernel on 512-bit registers (two
    /// channel blocks per register), depthwise at stride 1 two pixels per register, the
    /// first layer by `stem`; the rest as [`IsaKind::Avx2Fma`]. Where the core has two
    /// 512-bit FMA units (Xeons) this doubles the dense kernel's peak.
    Avx512,
    /// The plain twins: reference for tests, and correct everywhere.
    Scalar,
}

impl Isa {
    #[inline]
    pub(crate) fn kind(self) -> IsaKind {
        self.0
    }

    /// The plain twins, which need nothing of the CPU.
    pub(crate) fn scalar() -> Self {
        Isa(IsaKind::Scalar)
    }

    /// The best implementation this CPU runs. `FACES_NO_AVX512` (any value) keeps it
    /// to AVX2, for CPUs whose 512-bit FMAs measure slower.
    pub(crate) fn detect() -> Self {
        let no_avx512 = std::env::var_os("FACES_NO_AVX512").is_some();
        Self::available()
            .into_iter()
            .find(|isa| !(no_avx512 && isa.kind() == IsaKind::Avx512))
            .unwrap_or(Isa::scalar())
    }

    /// Every implementation this CPU runs, best first (tests compare each to the scalar twins).
    pub(crate) fn available() -> Vec<Self> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq") {
                all.push(Isa(IsaKind::Avx512));
            }
            all.push(Isa(IsaKind::Avx2Fma));
        }
        all.push(Isa::scalar());
        all
    }

    /// The implementation of `kind`, if this CPU runs it (tests compare ISAs).
    #[cfg(test)]
    pub(crate) fn of_kind(kind: IsaKind) -> Option<Self> {
        Self::available().into_iter().find(|isa| isa.kind() == kind)
    }
}
