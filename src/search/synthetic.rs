//! Seeded, embedding-like vectors for the recall test and the vector benchmark: a mixture of
//! Gaussian clusters, normalised. Uniform noise is nothing like real embeddings (every point is
//! almost equally far from every other), so it would flatter or punish an index unfairly.

use super::vector::normalized;

/// xorshift64* with Box–Muller: deterministic on every platform, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.next_f64().max(1e-12), self.next_f64());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

/// A mixture of `clusters` Gaussian blobs on the unit sphere in `dim` dimensions.
pub struct Mixture {
    rng: Rng,
    centers: Vec<Vec<f32>>,
    spread: f32,
}

impl Mixture {
    /// `spread` is each blob's standard deviation per coordinate relative to the unit-length
    /// centres; 0.35 in 768 dimensions puts a point about as close to its centre as to its
    /// neighbours, the overlap that makes nearest neighbours hard to find.
    pub fn new(seed: u64, dim: usize, clusters: usize, spread: f32) -> Self {
        let mut rng = Rng::new(seed);
        let centers = (0..clusters.max(1))
            .map(|_| {
                let raw: Vec<f32> = (0..dim).map(|_| rng.gaussian()).collect();
                normalized(&raw).expect("a Gaussian vector is never all zeros")
            })
            .collect();
        Self { rng, centers, spread }
    }

    /// The next point: a random centre plus Gaussian noise, normalised.
    pub fn sample(&mut self) -> Vec<f32> {
        let center = (self.rng.next_f64() * self.centers.len() as f64) as usize % self.centers.len();
        let spread = self.spread;
        let rng = &mut self.rng;
        let v: Vec<f32> = self.centers[center].iter().map(|x| x + spread * rng.gaussian()).collect();
        normalized(&v).unwrap_or(v)
    }
}
