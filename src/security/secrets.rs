//! Random opaque secrets (refresh tokens, API keys) and their stored digests.
//!
//! These secrets carry 256 bits of entropy, so a plain SHA-256 digest is enough to store them: no
//! dictionary exists to attack, and lookups stay one indexed query.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

/// A new secret: `prefix` followed by 32 random bytes in URL-safe base64.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The hex SHA-256 digest under which a secret is stored.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_digests_stable() {
        let a = generate("soko_rt_");
        let b = generate("soko_rt_");
        assert_ne!(a, b);
        assert!(a.starts_with("soko_rt_") && a.len() == 8 + 43);
        assert_eq!(digest(&a), digest(&a));
        assert_eq!(digest(&a).len(), 64);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
