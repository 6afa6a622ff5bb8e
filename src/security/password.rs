//! Password hashing with Argon2id at OWASP's parameters (m = 19456 KiB, t = 2, p = 1).
//!
//! Each hash takes ~19 MiB and tens of milliseconds of CPU, so hashing runs on blocking threads
//! behind admission control ([`crate::admission`]): a login flood is admitted as far as the
//! hashes ahead can be done within a short wait and the call's deadline, and refused at once
//! beyond that, instead of exhausting memory, starving the async workers that serve every other
//! call (health included), or queueing sign-ins for seconds.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::secrets::constant_time_eq;
use crate::admission::Admission;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};

const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const HASH_LEN: usize = 32;
const SALT_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The hashes queued ahead would not be done in time; retrying after `retry_after` is
    /// likely to be admitted.
    #[error("password hashing is saturated")]
    Busy { retry_after: Duration },
    #[error("stored password hash is malformed")]
    Malformed,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

/// Hashes and verifies passwords with bounded concurrency.
#[derive(Clone)]
pub struct PasswordHasher {
    admission: Admission,
    /// Argon2 working memory, reused across hashes: allocating 19 MiB afresh on whichever blocking
    /// thread runs each hash leaves the allocator holding far more than the permits allow.
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    params: (u32, u32, u32),
}

/// What a hash is assumed to take until one has been measured: OWASP's parameters take tens of
/// milliseconds on a server core; assuming more refuses a little early at start, never late.
const EXPECTED_HASH_TIME: Duration = Duration::from_millis(100);

impl PasswordHasher {
    /// `concurrency` hashes run at once; a call waits at most `max_wait` for its turn (less when
    /// its deadline is nearer).
    pub fn new(concurrency: usize, max_wait: Duration) -> Self {
        Self::with_params(concurrency, max_wait, (M_COST_KIB, T_COST, P_COST))
    }

    /// Cheaper parameters, for tests that create many accounts.
    pub fn with_params(concurrency: usize, max_wait: Duration, params: (u32, u32, u32)) -> Self {
        Self {
            admission: Admission::new("password_hash", concurrency, max_wait, EXPECTED_HASH_TIME),
            buffers: Arc::new(Mutex::new(Vec::new())),
            params,
        }
    }

    /// Returns a PHC string: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| PasswordError::Internal(e.to_string()))?;
        let (m, t, p) = self.params;
        let digest = self.run(password.as_bytes().to_vec(), salt.to_vec(), (m, t, p)).await?;
        Ok(format!(
            "$argon2id$v=19$m={m},t={t},p={p}${}${}",
            STANDARD_NO_PAD.encode(salt),
            STANDARD_NO_PAD.encode(digest)
        ))
    }

    /// Checks `password` against a stored PHC string, with that string's own parameters.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, PasswordError> {
        let (params, salt, expected) = parse_phc(phc).ok_or(PasswordError::Malformed)?;
        let digest = self.run(password.as_bytes().to_vec(), salt, params).await?;
        Ok(constant_time_eq(&digest, &expected))
    }

    /// Spends the same effort as a real verification, so unknown accounts can't be told apart
    /// from wrong passwords by timing.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), PasswordError> {
        self.run(password.as_bytes().to_vec(), vec![0u8; SALT_LEN], self.params).await.map(|_| ())
    }

    async fn run(
        &self,
        password: Vec<u8>,
        salt: Vec<u8>,
        (m, t, p): (u32, u32, u32),
    ) -> Result<Vec<u8>, PasswordError> {
        let admitted =
            self.admission.admit().await.map_err(|refused| PasswordError::Busy { retry_after: refused.retry_after })?;
        let buffers = self.buffers.clone();
        tokio::task::spawn_blocking(move || {
            let _admitted = admitted;
            let params = Params::new(m, t, p, Some(HASH_LEN)).map_err(|e| PasswordError::Internal(e.to_string()))?;
            let blocks = params.block_count();
            // At most one buffer per permit exists, since a buffer is only out while its permit is.
            let reused = buffers.lock().expect("buffer pool lock").pop().filter(|b| b.len() == blocks);
            let mut memory = reused.unwrap_or_else(|| vec![Block::default(); blocks]);
            let mut out = vec![0u8; HASH_LEN];
            let result = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into_with_memory(&password, &salt, &mut out, &mut memory)
                .map_err(|e| PasswordError::Internal(e.to_string()));
            buffers.lock().expect("buffer pool lock").push(memory);
            result.map(|()| out)
        })
        .await
        .map_err(|e| PasswordError::Internal(e.to_string()))?
    }
}

type Parsed = ((u32, u32, u32), Vec<u8>, Vec<u8>);

fn parse_phc(phc: &str) -> Option<Parsed> {
    let mut parts = phc.split('$');
    let (Some(""), Some("argon2id"), Some("v=19"), Some(params), Some(salt), Some(hash), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let mut m = None;
    let mut t = None;
    let mut p = None;
    for kv in params.split(',') {
        let (k, v) = kv.split_once('=')?;
        let v: u32 = v.parse().ok()?;
        match k {
            "m" => m = Some(v),
            "t" => t = Some(v),
            "p" => p = Some(v),
            _ => return None,
        }
    }
    let salt = STANDARD_NO_PAD.decode(salt).ok()?;
    let hash = STANDARD_NO_PAD.decode(hash).ok()?;
    Some(((m?, t?, p?), salt, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_parameters() {
        let hasher = PasswordHasher::new(2, Duration::from_secs(5));
        let phc = hasher.hash("correct horse battery staple").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify("correct horse battery staple", &phc).await.unwrap());
        assert!(!hasher.verify("Correct horse battery staple", &phc).await.unwrap());
        assert_ne!(phc, hasher.hash("correct horse battery staple").await.unwrap(), "salted");
        assert!(matches!(hasher.verify("x", "$bcrypt$nope").await, Err(PasswordError::Malformed)));
    }
}
