//! What can go wrong below the domain, classified by what a caller can do about it.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database can't be reached, is shutting down, or no connection was free in time.
    /// Retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("row not found")]
    NotFound,
    #[error("unique constraint violated: {0}")]
    UniqueViolation(String),
    #[error("foreign key violated: {0}")]
    ForeignKeyViolation(String),
    /// A restore found data it would overwrite (this many rows) and was not told to replace it.
    #[error("the database is not empty ({0} rows)")]
    NotEmpty(i64),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Fragments of driver messages that mean "the connection or the server is gone", for drivers
/// that report I/O failures as untyped errors (mysql_async, SQLite's busy/locked).
const UNAVAILABLE_HINTS: &[&str] = &[
    "connection",
    "input/output",
    "i/o error",
    "broken pipe",
    "timed out",
    "database is locked",
    "database is busy",
    "server has gone away",
    "lost connection",
    "shutdown",
    "eof",
];

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => Self::NotFound,
            DieselError::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation => Self::UniqueViolation(message),
                    DatabaseErrorKind::ForeignKeyViolation => Self::ForeignKeyViolation(message),
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand => {
                        Self::Unavailable(message)
                    }
                    _ if looks_unavailable(&message) => Self::Unavailable(message),
                    _ => Self::Unexpected(anyhow::anyhow!("database error ({kind:?}): {message}")),
                }
            }
            DieselError::BrokenTransactionManager => Self::Unavailable("broken transaction".into()),
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

impl From<diesel::ConnectionError> for StoreError {
    fn from(e: diesel::ConnectionError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<diesel_async::pooled_connection::PoolError> for StoreError {
    fn from(e: diesel_async::pooled_connection::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for StoreError {
    fn from(e: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> Self {
        match e {
            bb8::RunError::TimedOut => Self::Unavailable("no database connection within the checkout timeout".into()),
            bb8::RunError::User(e) => Self::Unavailable(e.to_string()),
        }
    }
}

fn looks_unavailable(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    UNAVAILABLE_HINTS.iter().any(|hint| message.contains(hint))
}
