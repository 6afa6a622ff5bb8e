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

struct Kernels {
    dot: Kernel,
    l2: Kernel,
}

fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Kernels { dot: avx2::dot, l2: avx2::l2_squared };
        }
        Kernels { dot: portable::dot, l2: portable::l2_squared }
    })
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2)(a, b)
}

/// Asks the CPU to start loading a vector that is about to be compared, so the graph walk's next
/// distance does not wait on memory.
#[inline(always)]
pub fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // Two cache lines are enough to get the hardware prefetcher streaming the rest.
        let p = v.as_ptr().cast::<i8>();
        // SAFETY: prefetching is a hint; it never faults, even for an address past the slice.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

mod portable {
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
