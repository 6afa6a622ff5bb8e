//! The one mapping from domain errors to gRPC statuses.
//!
//! Internal details never reach the client: they are logged here, once, with the request's span
//! (which carries the request id), and the client gets a generic message it can quote.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Error;

/// The `ErrorInfo.domain` of every error Soko produces.
const ERROR_DOMAIN: &str = "soko.marketplace";

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(violations) => {
                let message = describe_violations(&violations);
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            Error::NotFound { resource, id } => {
                let details = ErrorDetails::with_resource_info(
                    resource,
                    id.clone(),
                    "",
                    format!("{resource} not found"),
                );
                Status::with_error_details(
                    Code::NotFound,
                    format!("{resource} `{id}` not found"),
                    details,
                )
            }
            Error::AlreadyExists { resource, id } => {
                let details = ErrorDetails::with_resource_info(
                    resource,
                    id.clone(),
                    "",
                    format!("{resource} already exists"),
                );
                Status::with_error_details(
                    Code::AlreadyExists,
                    format!("{resource} `{id}` already exists"),
                    details,
                )
            }
            Error::Unavailable(source) => {
                tracing::warn!(error = %source, "storage unavailable");
                let mut details =
                    ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1)));
                details.set_error_info("STORAGE_UNAVAILABLE", ERROR_DOMAIN, []);
                Status::with_error_details(
                    Code::Unavailable,
                    "the service is temporarily unavailable; retry with backoff",
                    details,
                )
            }
            Error::Unexpected(source) => {
                tracing::error!(error = ?source, "unexpected error");
                let details = ErrorDetails::with_error_info("INTERNAL", ERROR_DOMAIN, []);
                Status::with_error_details(Code::Internal, "internal error", details)
            }
        }
    }
}

fn describe_violations(violations: &[crate::domain::FieldViolation]) -> String {
    let fields: Vec<String> = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    format!("invalid argument: {}", fields.join("; "))
}
