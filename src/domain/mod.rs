//! The marketplace's rules, independent of transport: nothing here knows about gRPC.

/// Declares a UUID-backed id type with canonical parsing and display.
macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ".")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, String> {
                if raw.is_empty() {
                    return Err("is required".into());
                }
                // Only the canonical hyphenated form, so one thing has exactly one id string.
                uuid::Uuid::try_parse(raw)
                    .ok()
                    .filter(|u| u.hyphenated().to_string() == raw)
                    .map(Self)
                    .ok_or_else(|| "must be a UUID in lower-case hyphenated form".into())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod listing;
pub mod product;
pub mod sessions;
pub mod switches;

pub use error::{Error, FieldViolation};
