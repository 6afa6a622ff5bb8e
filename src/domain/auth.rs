//! Who is calling and what they may do: roles, principals, and the account input rules.

use std::fmt;

uuid_id!(UserId, "user account");
uuid_id!(SessionId, "session (refresh-token family)");
uuid_id!(ApiKeyId, "API key");

/// What a user may do. Each user has exactly one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Buyer,
    Seller,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Seller => "seller",
            Self::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "buyer" => Some(Self::Buyer),
            "seller" => Some(Self::Seller),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Whether this role includes `required`: admins may do what sellers may, sellers what
    /// buyers may.
    pub fn includes(self, required: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Buyer => 0,
            Role::Seller => 1,
            Role::Admin => 2,
        };
        rank(self) >= rank(required)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of a request, as the authentication layer identified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    /// Soko itself: the CLI, start-up tasks and demo data. Never the result of authentication.
    System,
    /// A user presenting an access token issued for `session_id`.
    User {
        user_id: UserId,
        role: Role,
        session_id: SessionId,
    },
    /// A service presenting an API key, acting as the key's owner with the owner's current role.
    ApiKey {
        key_id: ApiKeyId,
        user_id: UserId,
        role: Role,
    },
    /// An internal service presenting a verified client certificate (mTLS), acting as the account
    /// the certificate names, with that account's current role.
    Certificate {
        user_id: UserId,
        role: Role,
    },
}

impl Principal {
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Self::Anonymous | Self::System => None,
            Self::User { user_id, .. } | Self::ApiKey { user_id, .. } | Self::Certificate { user_id, .. } => {
                Some(*user_id)
            }
        }
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            Self::Anonymous => None,
            Self::System => Some(Role::Admin),
            Self::User { role, .. } | Self::ApiKey { role, .. } | Self::Certificate { role, .. } => Some(*role),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role() == Some(Role::Admin)
    }

    /// Whose resources this caller may change: `Ok(None)` for any (admins, the system),
    /// `Ok(Some(user))` for that user's own, `Err` for nobody's (anonymous callers).
    pub fn write_scope(&self) -> Result<Option<UserId>, super::Error> {
        match self {
            Self::Anonymous => Err(super::Error::Unauthenticated("sign in first")),
            _ if self.is_admin() => Ok(None),
            other => Ok(other.user_id()),
        }
    }

    /// How the audit log and request logs name this caller.
    pub fn audit_name(&self) -> String {
        match self {
            Self::Anonymous => "anonymous".into(),
            Self::System => "system".into(),
            Self::User { user_id, .. } => format!("user:{user_id}"),
            Self::ApiKey { key_id, .. } => format!("api_key:{key_id}"),
            Self::Certificate { user_id, .. } => format!("certificate:{user_id}"),
        }
    }
}

/// Everything the domain needs to know about a request besides its arguments.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub principal: Principal,
    pub client_ip: String,
    pub request_id: String,
}

impl RequestContext {
    /// A context for work the system does on its own behalf (CLI, start-up).
    pub fn system() -> Self {
        Self { principal: Principal::System, client_ip: String::new(), request_id: "system".into() }
    }
}

pub const EMAIL_MAX_CHARS: usize = 254;
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;

/// Normalises and checks an email address: trimmed, NFKC-normalised and case-folded, then
/// `local@domain.tld`. Normalising before uniqueness and login makes fullwidth letters, the long
/// s and other compatibility forms the same account as their plain spelling. Look-alikes that
/// normalisation cannot join (Cyrillic `а` beside Latin `a`) are refused when they mix scripts
/// in the local part or in one domain label, which no real mailbox needs.
pub fn parse_email(raw: &str) -> Result<String, String> {
    let email = fold(raw.trim());
    if email.is_empty() {
        return Err("is required".into());
    }
    if email.chars().count() > EMAIL_MAX_CHARS {
        return Err(format!("must have at most {EMAIL_MAX_CHARS} characters"));
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !valid {
        return Err("must be an email address like name@example.com".into());
    }
    let (local, domain) = email.split_once('@').expect("checked above");
    if std::iter::once(local).chain(domain.split('.')).any(mixes_scripts) {
        return Err("must not mix letters of different scripts (Latin and Cyrillic, say) in one part".into());
    }
    Ok(email)
}

/// NFKC, then lower case, then NFKC again (lower-casing can leave text unnormalised): the
/// caseless match of Unicode's default case folding for the letters emails use.
pub fn fold(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lowered: String = raw.nfkc().flat_map(char::to_lowercase).collect();
    lowered.nfkc().collect()
}

/// Whether `part` has letters of more than one script. Digits and punctuation belong to no
/// script; Han, kana, Hangul and Bopomofo count as one, since Japanese, Chinese and Korean
/// writing mix them normally.
fn mixes_scripts(part: &str) -> bool {
    use unicode_script::{Script, UnicodeScript};
    let mut seen: Option<Script> = None;
    for c in part.chars() {
        let script = match c.script() {
            Script::Common | Script::Inherited | Script::Unknown => continue,
            Script::Hiragana | Script::Katakana | Script::Hangul | Script::Bopomofo => Script::Han,
            other => other,
        };
        match seen {
            None => seen = Some(script),
            Some(s) if s != script => return true,
            Some(_) => {}
        }
    }
    false
}

/// Passwords: 8–128 code points, anything allowed (NIST SP 800-63B: length, not composition).
pub fn check_password(raw: &str) -> Result<(), String> {
    let n = raw.chars().count();
    if n < PASSWORD_MIN_CHARS {
        Err(format!("must have at least {PASSWORD_MIN_CHARS} characters"))
    } else if n > PASSWORD_MAX_CHARS {
        Err(format!("must have at most {PASSWORD_MAX_CHARS} characters"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(parse_email("  Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "ada@@example.com"] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn look_alike_emails_fold_together_or_are_refused() {
        // Fullwidth letters and the long s are compatibility forms of plain letters.
        assert_eq!(parse_email("ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ").unwrap(), "ada@example.com");
        assert_eq!(parse_email("ſam@example.com").unwrap(), "sam@example.com");
        assert_eq!(parse_email("ÅSA@Example.com").unwrap(), "åsa@example.com");
        // Cyrillic а (U+0430) in a Latin local part, or in a Latin domain label.
        assert!(parse_email("\u{430}da@example.com").is_err());
        assert!(parse_email("ada@ex\u{430}mple.com").is_err());
        // One script throughout is a real mailbox, whatever the script.
        assert_eq!(parse_email("мария@пример.рф").unwrap(), "мария@пример.рф");
        assert_eq!(parse_email("さとう太郎@example.jp").unwrap(), "さとう太郎@example.jp");
        assert_eq!(parse_email("ada.2024+shop@example.com").unwrap(), "ada.2024+shop@example.com");
    }

    #[test]
    fn roles_nest() {
        assert!(Role::Admin.includes(Role::Seller));
        assert!(Role::Seller.includes(Role::Buyer));
        assert!(!Role::Buyer.includes(Role::Seller));
        assert!(!Role::Seller.includes(Role::Admin));
    }
}
