//! Access tokens: HS256 JWTs with the algorithm pinned, issuer, audience, `exp` and `nbf` always
//! set and checked with a small explicit leeway, and a size cap applied before any decoding
//! (grpc-web over HTTP/1.1 has no header-size limit of HTTP/2's kind).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Tokens larger than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated between replicas, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// What an access token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub role: String,
    /// The session (refresh-token family) the token was issued for.
    pub sid: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token too large")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not accepted")]
    Algorithm,
    #[error("token key id is not known")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer or audience is wrong")]
    WrongParty,
    #[error("token lacks a required claim")]
    MissingClaim,
}

/// Issues access tokens with one signing key, and verifies them with it or, during a rotation,
/// with the previous key: tokens signed before the rotation keep working until they expire.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The key id and verifying key of the secret being rotated out.
    previous: Option<(String, DecodingKey)>,
    validation: Validation,
    key_id: String,
    issuer: String,
    audience: String,
    ttl: Duration,
}

/// An issued access token and when it expires.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: String,
    pub ttl: Duration,
    pub expires_at: SystemTime,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl TokenKeys {
    pub fn new(secret: &[u8], key_id: &str, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            previous: None,
            validation,
            key_id: key_id.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    /// Also accepts tokens signed with `secret` under `key_id` (which must differ from the
    /// current key's id): the key being rotated out.
    pub fn with_previous(mut self, secret: &[u8], key_id: &str) -> Self {
        self.previous = Some((key_id.to_owned(), DecodingKey::from_secret(secret)));
        self
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: &str, role: &str, session_id: &str) -> Result<AccessToken, TokenError> {
        let now = SystemTime::now();
        let expires_at = now + self.ttl;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_owned(),
            role: role.to_owned(),
            sid: session_id.to_owned(),
            iat: unix(now),
            nbf: unix(now),
            exp: unix(expires_at),
        };
        let header = Header { kid: Some(self.key_id.clone()), ..Header::new(Algorithm::HS256) };
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|_| TokenError::Malformed)?;
        Ok(AccessToken { token, ttl: self.ttl, expires_at })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // Checked before the signature so `alg: none` and RS/HS confusion never reach a verifier.
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        let key = match (header.kid.as_deref(), &self.previous) {
            (Some(kid), _) if kid == self.key_id => &self.decoding,
            (Some(kid), Some((previous_kid, previous))) if kid == previous_kid => previous,
            _ => return Err(TokenError::UnknownKey),
        };
        jsonwebtoken::decode::<Claims>(token, key, &self.validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience | ErrorKind::InvalidSubject => {
                    TokenError::WrongParty
                }
                ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
                _ => TokenError::Malformed,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&[7u8; 32], "k1", "soko", "soko-api", Duration::from_secs(900))
    }

    #[test]
    fn issued_tokens_verify() {
        let keys = keys();
        let token = keys.issue("user-1", "buyer", "session-1").unwrap();
        let claims = keys.verify(&token.token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role.as_str(), claims.sid.as_str()), ("user-1", "buyer", "session-1"));
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn other_keys_and_sizes_are_refused() {
        let token = keys().issue("u", "buyer", "s").unwrap().token;
        let other = TokenKeys::new(&[8u8; 32], "k1", "soko", "soko-api", Duration::from_secs(900));
        assert_eq!(other.verify(&token), Err(TokenError::Signature));
        let rotated = TokenKeys::new(&[7u8; 32], "k2", "soko", "soko-api", Duration::from_secs(900));
        assert_eq!(rotated.verify(&token), Err(TokenError::UnknownKey));
        assert_eq!(keys().verify(&"a".repeat(MAX_TOKEN_BYTES + 1)), Err(TokenError::TooLarge));
    }

    #[test]
    fn a_rotation_accepts_the_previous_key_by_its_id_only() {
        let old = keys().issue("u", "buyer", "s").unwrap().token;
        let rotated = TokenKeys::new(&[9u8; 32], "k2", "soko", "soko-api", Duration::from_secs(900))
            .with_previous(&[7u8; 32], "k1");
        assert_eq!(rotated.verify(&old).unwrap().sub, "u", "tokens of the old key work until they expire");
        let new = rotated.issue("v", "buyer", "s").unwrap().token;
        assert_eq!(rotated.verify(&new).unwrap().sub, "v");
        assert_eq!(keys().verify(&new), Err(TokenError::UnknownKey), "new tokens are signed with the new key");
        // A token naming the old id but signed with anything else is still refused.
        let forged = TokenKeys::new(&[1u8; 32], "k1", "soko", "soko-api", Duration::from_secs(900));
        assert_eq!(rotated.verify(&forged.issue("u", "admin", "s").unwrap().token), Err(TokenError::Signature));
    }
}
