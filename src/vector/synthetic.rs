//! Seeded, embedding-like vectors for the recall test and the vector benchmark: a mixture of
//! Gaussian clusters, normalised. Uniform noise is nothing like real embeddings (every point is
//! almost equally far from every other), so it would flatter or punish an index unfairly.

use super::normalized;

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

/// A mixture of Gaussian clusters on the unit sphere, shaped like real embeddings: each
/// cluster varies mostly along a few directions of its own (a low-rank covariance with decaying
/// variances) plus a little isotropic noise. Isotropic blobs in 768 dimensions make every point
/// nearly equidistant from every other, which neither real embeddings nor any index look like.
pub struct Mixture {
    rng: Rng,
    dim: usize,
    centers: Vec<Vec<f32>>,
    /// Per cluster, `RANK` directions of `dim` values each, scaled by their standard deviation.
    directions: Vec<Vec<f32>>,
    noise: f32,
}

const CLUSTERS: usize = 1_000;
const RANK: usize = 32;
const NOISE: f32 = 0.03;

impl Mixture {
    /// The mixture the recall test and the benchmarks use: 1 000 clusters, each spread along 32
    /// directions (standard deviation 1/√j along the j-th) plus 0.03 isotropic noise per
    /// coordinate. A point's nearest neighbour then has a cosine of about 0.5 and its 100th
    /// about 0.1, like image embeddings of a varied catalogue.
    pub fn embedding_like(seed: u64, dim: usize) -> Self {
        let mut rng = Rng::new(seed);
        let scale = 1.0 / (dim as f32).sqrt();
        let centers = (0..CLUSTERS)
            .map(|_| {
                let raw: Vec<f32> = (0..dim).map(|_| rng.gaussian()).collect();
                normalized(&raw).expect("a Gaussian vector is never all zeros")
            })
            .collect();
        let directions = (0..CLUSTERS)
            .map(|_| {
                (0..RANK)
                    .flat_map(|j| {
                        let sd = scale / ((j + 1) as f32).sqrt();
                        (0..dim).map(|_| rng.gaussian() * sd).collect::<Vec<_>>()
                    })
                    .collect()
            })
            .collect();
        Self { rng, dim, centers, directions, noise: NOISE }
    }

    /// The next point: a random centre, moved along its cluster's directions and by isotropic
    /// noise, normalised.
    pub fn sample(&mut self) -> Vec<f32> {
        let cluster = (self.rng.next_f64() * CLUSTERS as f64) as usize % CLUSTERS;
        let mut v = self.centers[cluster].clone();
        for direction in self.directions[cluster].chunks_exact(self.dim) {
            let a = self.rng.gaussian();
            v.iter_mut().zip(direction).for_each(|(x, d)| *x += a * d);
        }
        let noise = self.noise;
        v.iter_mut().for_each(|x| *x += noise * self.rng.gaussian());
        normalized(&v).unwrap_or(v)
    }
}
