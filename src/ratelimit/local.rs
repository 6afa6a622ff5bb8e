//! Buckets in this process's memory.

use std::{collections::HashMap, sync::Mutex};

/// A fast seeded hash: bucket keys are hashed several times per call, and SipHash showed in
/// profiles. Seeds are random per process, which is what resists crafted collisions here.
type Hasher = foldhash::quality::RandomState;

use super::{Bucket, BucketState, gcra};

/// Past this many buckets, expired ones are swept on the next insert.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Default)]
pub struct LocalStore {
    tats: Mutex<HashMap<String, i64, Hasher>>,
}

impl LocalStore {
    pub fn check(&self, buckets: &[Bucket], now: i64) -> Vec<BucketState> {
        let mut tats = self.tats.lock().expect("rate limiter lock");
        let decided: Vec<(BucketState, i64)> =
            buckets.iter().map(|b| gcra::decide(b.rate, tats.get(&b.key).copied(), now)).collect();
        if decided.iter().all(|(s, _)| s.allowed) {
            if tats.len() > SWEEP_ABOVE {
                tats.retain(|_, tat| *tat > now);
            }
            for (bucket, (_, tat)) in buckets.iter().zip(&decided) {
                match tats.get_mut(&bucket.key) {
                    Some(stored) => *stored = *tat,
                    None => {
                        tats.insert(bucket.key.clone(), *tat);
                    }
                }
            }
        }
        decided.into_iter().map(|(s, _)| s).collect()
    }
}
