//! The domain's errors: what went wrong in terms a caller can act on. The gRPC layer maps each
//! variant to a status in one place (`api::status`).

use crate::store::StoreError;

/// One invalid input field: its path in the request and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{resource} `{id}` not found")]
    NotFound { resource: &'static str, id: String },
    #[error("{resource} `{id}` already exists")]
    AlreadyExists { resource: &'static str, id: String },
    /// No valid credentials. The text is safe to show the caller.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// Valid credentials without the right to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Too many attempts; the caller may retry after the delay.
    #[error("{message}")]
    ResourceExhausted { message: String, retry_after: std::time::Duration },
    #[error("storage unavailable")]
    Unavailable(#[source] StoreError),
    /// Read-only mode is in effect (an operator's switch, or the database not answering):
    /// writes are refused, reads go on.
    #[error("read-only mode ({})", .0.as_str())]
    ReadOnly(super::switches::ReadOnlyCause),
    /// A dependency other than storage is saturated or down; retry later.
    #[error("{0}")]
    Busy(&'static str),
    /// Expensive work (`work`, e.g. sign-ins) is queued beyond what can be done in time; the
    /// caller may retry after the delay.
    #[error("too many {work} at once")]
    Overloaded { work: &'static str, retry_after: std::time::Duration },
    /// A dependency other than storage failed; the caller may retry later. The source is logged,
    /// never shown.
    #[error("{dependency} unavailable")]
    DependencyUnavailable {
        dependency: &'static str,
        #[source]
        source: anyhow::Error,
    },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation { field: field.into(), description: description.into() }])
    }

    /// Prefixes every field path, e.g. `name` → `product.name`, so paths match the request.
    pub fn within(self, parent: &str) -> Self {
        match self {
            Self::InvalidArgument(violations) => Self::InvalidArgument(
                violations
                    .into_iter()
                    .map(|v| FieldViolation { field: format!("{parent}.{}", v.field), ..v })
                    .collect(),
            ),
            other => other,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            other => Self::Unexpected(anyhow::Error::new(other)),
        }
    }
}

/// Collects violations so a request with several bad fields gets all of them in one answer.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records the error of `result` under `field` and returns its value, if any.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldViolation { field: field.to_owned(), description });
                None
            }
        }
    }

    /// Ok when nothing was recorded.
    pub fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}
