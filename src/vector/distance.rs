//! Vector distances, the hot loop of visual search. AVX2 + FMA when the CPU has them (checked once
//! at run time), else a portable loop the compiler can still vectorise. These are our own rather
//! than hnsw_rs's: its SIMD feature (`simdeez_f`) does not compile next to diesel's `table!` macro
//! (conflicting trait impls), and its scalar fallback is ~2.5× slower.

use std::sync::OnceLock;

/// How similarity between two embeddings is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Cosine similarity: vectors are L2-normalised when stored, so it is a dot product.
    #[default]
    Cosine,
    /// Euclidean distance on the vectors as given.
    L2,
}

impl Metric {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "cosine" => Some(Self::Cosine),
            "l2" | "euclidean" => Some(Self::L2),
            _ => None,
        }
    }

    /// A distance to minimise: `1 - cos` or the squared Euclidean distance.
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            // Two unit vectors rounded to f32 can have a dot product a hair above 1; hnsw_rs
            // asserts distances are never negative.
            Self::Cosine => (1.0 - dot(a, b)).max(0.0),
            Self::L2 => l2_squared(a, b),
        }
    }

    /// The score a client sees, higher always closer: cosine similarity, or minus the Euclidean
    /// distance.
    pub fn score(self, distance: f32) -> f32 {
        match self {
            Self::Cosine => 1.0 - distance,
            Self::L2 => -distance.max(0.0).sqrt(),
        }
    }

    /// The vector as stored: unit length for cosine, unchanged for L2. `None` when it has no
    /// direction (all zeros) or holds a non-finite value.
    pub fn prepare(self, v: &[f32]) -> Option<Vec<f32>> {
        if v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return None;
        }
        Some(match self {
            Self::Cosine => v.iter().map(|x| (f64::from(*x) / norm) as f32).collect(),
            Self::L2 => v.to_vec(),
        })
    }
}

type Kernel = fn(&[f32], &[f32]) -> f32;
type HalfKernel = fn(&[f32], &[u16]) -> f32;

struct Kernels {
    dot: Kernel,
    l2: Kernel,
    dot_half: HalfKernel,
    l2_half: HalfKernel,
    dot_i8: fn(&[i8], &[i8]) -> i32,
}

fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Kernels {
                dot: avx2::dot,
                l2: avx2::l2_squared,
                dot_half: avx2::dot_half,
                l2_half: avx2::l2_half,
                dot_i8: avx2::dot_i8,
            };
        }
        Kernels {
            dot: portable::dot,
            l2: portable::l2_squared,
            dot_half: portable::dot_half,
            l2_half: portable::l2_half,
            dot_i8: portable::dot_i8,
        }
    })
}

/// `a · b` for a query in f32 and a stored vector in IEEE half precision (see [`to_half`]).
#[inline]
pub fn dot_half(a: &[f32], b: &[u16]) -> f32 {
    (kernels().dot_half)(a, b)
}

/// Squared Euclidean distance between an f32 query and a half-precision stored vector.
#[inline]
pub fn l2_half(a: &[f32], b: &[u16]) -> f32 {
    (kernels().l2_half)(a, b)
}

/// Dot product of two int8 codes. Codes must lie in `-127..=127` (the AVX2 kernel's pairwise
/// sums would saturate at -128 × -128).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    (kernels().dot_i8)(a, b)
}

/// IEEE 754 half precision bits of `x`, rounded to nearest even; overflow becomes infinity.
pub fn to_half(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // A subnormal half (or zero): the value is `m × 2^-24`.
        if e < -10 {
            return sign;
        }
        let man = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let rounded = (man + (1 << (shift - 1)) - 1 + ((man >> shift) & 1)) >> shift;
        return sign | rounded as u16;
    }
    let (kept, rest) = (man >> 13, man & 0x1fff);
    let mut half = ((e as u32) << 10) | kept;
    // A carry out of the mantissa correctly moves on to the next exponent (or infinity).
    if rest > 0x1000 || (rest == 0x1000 && kept & 1 == 1) {
        half += 1;
    }
    sign | half as u16
}

/// The f32 value of half precision bits.
pub fn from_half(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    match exp {
        0 => {
            let magnitude = man as f32 * (1.0 / 16_777_216.0);
            if sign != 0 { -magnitude } else { magnitude }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2)(a, b)
}

/// Asks the CPU to start loading `v` (every cache line of it), so the graph walk's next
/// comparison does not wait on memory.
#[inline(always)]
pub fn prefetch_bytes<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(v)).step_by(64) {
            // SAFETY: prefetching is a hint; it never faults, and the address is inside `v`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

mod portable {
    use super::from_half;

    pub fn dot_half(a: &[f32], b: &[u16]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * from_half(*y)).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * from_half(y[i]);
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn l2_half(a: &[f32], b: &[u16]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                let d = x - from_half(*y);
                d * d
            })
            .sum()
    }

    pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        a.iter().zip(b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum()
    }

    /// Eight independent sums so the loop vectorises and isn't bound by one add's latency.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        acc.iter().sum::<f32>() + tail
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: only selected after `is_x86_feature_detected!` found AVX2 and FMA.
        unsafe { dot_avx2(a, b) }
    }

    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { l2_avx2(a, b) }
    }

    pub fn dot_half(a: &[f32], b: &[u16]) -> f32 {
        // SAFETY: only selected after `is_x86_feature_detected!` found AVX2, FMA and F16C.
        unsafe { dot_half_avx2(a, b) }
    }

    pub fn l2_half(a: &[f32], b: &[u16]) -> f32 {
        // SAFETY: as above.
        unsafe { l2_half_avx2(a, b) }
    }

    pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: as above.
        unsafe { dot_i8_avx2(a, b) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_half_avx2(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): `i + width <= n` is checked before each load, and both slices
        // have at least `n` elements.
        unsafe {
            while i + 16 <= n {
                let b0 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i).cast()));
                let b1 = _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i + 8).cast()));
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), b0, s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), b1, s1);
                i += 16;
            }
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            sum += a[i] * super::from_half(b[i]);
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn l2_half_avx2(a: &[f32], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): bounds checked as in `dot_half_avx2`.
        unsafe {
            while i + 16 <= n {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i).cast())));
                let d1 = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_cvtph_ps(_mm_loadu_si128(pb.add(i + 8).cast())),
                );
                s0 = _mm256_fmadd_ps(d0, d0, s0);
                s1 = _mm256_fmadd_ps(d1, d1, s1);
                i += 16;
            }
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            let d = a[i] - super::from_half(b[i]);
            sum += d * d;
            i += 1;
        }
        sum
    }

    /// Signed int8 dot product 32 lanes at a time: `maddubs` multiplies unsigned by signed bytes,
    /// so `|a|` is multiplied by `b` carrying `a`'s sign, and pairs of products are summed into
    /// i16 (at most 2 × 127 × 127, no saturation) and then into i32.
    #[target_feature(enable = "avx2")]
    unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let ones = _mm256_set1_epi16(1);
        let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut i = 0;
        // SAFETY (all loads): bounds checked as in `dot_avx2`.
        unsafe {
            while i + 64 <= n {
                let a0 = _mm256_loadu_si256(pa.add(i).cast());
                let b0 = _mm256_loadu_si256(pb.add(i).cast());
                let a1 = _mm256_loadu_si256(pa.add(i + 32).cast());
                let b1 = _mm256_loadu_si256(pb.add(i + 32).cast());
                let p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(a0, a0), _mm256_sign_epi8(b0, a0));
                let p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(a1, a1), _mm256_sign_epi8(b1, a1));
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, ones));
                i += 64;
            }
            while i + 32 <= n {
                let a0 = _mm256_loadu_si256(pa.add(i).cast());
                let b0 = _mm256_loadu_si256(pb.add(i).cast());
                let p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(a0, a0), _mm256_sign_epi8(b0, a0));
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
                i += 32;
            }
        }
        let s = _mm256_add_epi32(s0, s1);
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let mut sum = _mm_cvtsi128_si32(s);
        while i < n {
            sum += i32::from(a[i]) * i32::from(b[i]);
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1, mut s2, mut s3) =
            (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): `i + width <= n` is checked before each load, and both slices
        // have at least `n` elements.
        unsafe {
            while i + 32 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), s1);
                s2 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 16)), _mm256_loadu_ps(pb.add(i + 16)), s2);
                s3 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 24)), _mm256_loadu_ps(pb.add(i + 24)), s3);
                i += 32;
            }
            while i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
                i += 8;
            }
        }
        let mut sum = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY (all loads): bounds checked as in `dot_avx2`.
        unsafe {
            while i + 16 <= n {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                let d1 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)));
                s0 = _mm256_fmadd_ps(d0, d0, s0);
                s1 = _mm256_fmadd_ps(d1, d1, s1);
                i += 16;
            }
            while i + 8 <= n {
                let d0 = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                s0 = _mm256_fmadd_ps(d0, d0, s0);
                i += 8;
            }
        }
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            let d = a[i] - b[i];
            sum += d * d;
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
    }

    #[test]
    fn kernels_agree_with_the_textbook_formulas_for_every_length() {
        for n in [1, 3, 7, 8, 9, 16, 31, 33, 100, 768] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 13) as f32 - 6.0) / 5.0).collect();
            let expected = naive_dot(&a, &b);
            for got in [dot(&a, &b), portable::dot(&a, &b)] {
                assert!((f64::from(got) - expected).abs() < 1e-3, "dot n={n}: {got} vs {expected}");
            }
            let expected_l2: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
            for got in [l2_squared(&a, &b), portable::l2_squared(&a, &b)] {
                assert!((f64::from(got) - expected_l2).abs() < 1e-3, "l2 n={n}: {got} vs {expected_l2}");
            }
        }
    }

    #[test]
    fn half_precision_round_trips_and_rounds_to_nearest() {
        for x in [0.0f32, -0.0, 1.0, -2.5, 0.1, 65504.0, 6.1e-5, 5.96e-8, 1e-3, -0.036] {
            let back = from_half(to_half(x));
            assert!((back - x).abs() <= x.abs() * 1e-3 + 6e-8, "{x} came back as {back}");
        }
        assert_eq!(from_half(to_half(1e6)), f32::INFINITY);
        assert_eq!(to_half(1.0), 0x3c00);
        assert_eq!(to_half(65504.0), 0x7bff);
        // Every half survives the trip through f32 unchanged.
        for h in (0..=u16::MAX).filter(|h| (h >> 10) & 0x1f != 0x1f) {
            assert_eq!(to_half(from_half(h)), h, "{h:#06x}");
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("f16c") {
            use std::arch::x86_64::*;
            for i in 0..100_000u32 {
                let x = f32::from_bits(i.wrapping_mul(2_654_435_761));
                if !x.is_finite() {
                    continue;
                }
                // SAFETY: F16C was detected above.
                let hw = unsafe { _mm_extract_epi16::<0>(_mm_cvtps_ph::<0>(_mm_set1_ps(x))) } as u16;
                assert_eq!(to_half(x), hw, "{x:e}");
            }
        }
    }

    #[test]
    fn mixed_precision_kernels_agree_with_the_textbook_formulas() {
        for n in [1, 15, 16, 17, 63, 64, 65, 100, 768] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 13) as f32 - 6.0) / 5.0).collect();
            let halves: Vec<u16> = b.iter().map(|x| to_half(*x)).collect();
            let rounded: Vec<f32> = halves.iter().map(|h| from_half(*h)).collect();
            let expected = naive_dot(&a, &rounded);
            for got in [dot_half(&a, &halves), portable::dot_half(&a, &halves)] {
                assert!((f64::from(got) - expected).abs() < 1e-3, "dot_half n={n}: {got} vs {expected}");
            }
            let expected_l2: f64 = a.iter().zip(&rounded).map(|(x, y)| f64::from(x - y).powi(2)).sum();
            for got in [l2_half(&a, &halves), portable::l2_half(&a, &halves)] {
                assert!((f64::from(got) - expected_l2).abs() < 1e-3, "l2_half n={n}: {got} vs {expected_l2}");
            }
            let ca: Vec<i8> = (0..n).map(|i| ((i * 37 % 255) - 127) as i8).collect();
            let cb: Vec<i8> = (0..n).map(|i| (127 - (i * 91 % 255)) as i8).collect();
            let expected: i32 = ca.iter().zip(&cb).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
            assert_eq!(dot_i8(&ca, &cb), expected, "dot_i8 n={n}");
            assert_eq!(portable::dot_i8(&ca, &cb), expected, "portable dot_i8 n={n}");
        }
    }

    #[test]
    fn cosine_vectors_are_unit_length_and_bad_ones_are_refused() {
        let v = Metric::Cosine.prepare(&[3.0, 4.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(Metric::L2.prepare(&[3.0, 4.0]).unwrap(), [3.0, 4.0]);
        assert!(Metric::Cosine.prepare(&[0.0, 0.0]).is_none());
        assert!(Metric::L2.prepare(&[f32::NAN, 1.0]).is_none());
        assert!((Metric::Cosine.score(Metric::Cosine.distance(&v, &v)) - 1.0).abs() < 1e-6);
        assert!((Metric::L2.score(Metric::L2.distance(&[0.0, 0.0], &[3.0, 4.0])) + 5.0).abs() < 1e-6);
    }
}
