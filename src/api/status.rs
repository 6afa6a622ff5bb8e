//! The one mapping from domain errors to gRPC statuses.
//!
//! Internal details never reach the client: they are logged here, once, with the request's span
//! (which carries the request id), and the client gets a generic message it can quote.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Error;

/// The `ErrorInfo.domain` of every error Soko produces.
const ERROR_DOMAIN: &str = "soko.marketplace";
/// The `ErrorInfo.reason` of a write refused in read-only mode, as the contract documents it.
pub const READ_ONLY_REASON: &str = "READ_ONLY_MODE";

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
                let details =
                    ErrorDetails::with_resource_info(resource, id.clone(), "", format!("{resource} not found"));
                Status::with_error_details(Code::NotFound, format!("{resource} `{id}` not found"), details)
            }
            Error::AlreadyExists { resource, id } => {
                let details =
                    ErrorDetails::with_resource_info(resource, id.clone(), "", format!("{resource} already exists"));
                Status::with_error_details(Code::AlreadyExists, format!("{resource} `{id}` already exists"), details)
            }
            Error::Unauthenticated(why) => {
                let details = ErrorDetails::with_error_info("UNAUTHENTICATED", ERROR_DOMAIN, []);
                Status::with_error_details(Code::Unauthenticated, why, details)
            }
            Error::PermissionDenied(why) => {
                let details = ErrorDetails::with_error_info("PERMISSION_DENIED", ERROR_DOMAIN, []);
                Status::with_error_details(Code::PermissionDenied, why, details)
            }
            Error::FailedPrecondition(why) => {
                let mut details = ErrorDetails::new();
                details.add_precondition_failure_violation("STATE", "", why.clone());
                Status::with_error_details(Code::FailedPrecondition, why, details)
            }
            Error::ResourceExhausted { message, retry_after } => {
                // Whole seconds, rounded up, so a client that waits exactly this long succeeds.
                let retry_after =
                    std::time::Duration::from_secs(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0));
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.set_error_info("TOO_MANY_ATTEMPTS", ERROR_DOMAIN, []);
                let mut status = Status::with_error_details(Code::ResourceExhausted, message, details);
                if let Ok(value) = retry_after.as_secs().to_string().parse() {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            Error::Overloaded { work, retry_after } => {
                metrics::counter!("soko_requests_overloaded_total", "work" => work).increment(1);
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.set_error_info("OVERLOADED", ERROR_DOMAIN, [("work".into(), work.into())]);
                let message = format!("too many {work} at once; retry after {} ms", retry_after.as_millis());
                let mut status = Status::with_error_details(Code::ResourceExhausted, message, details);
                let seconds = retry_after.as_secs_f64().ceil() as u64;
                if let Ok(value) = seconds.max(1).to_string().parse() {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            Error::Busy(why) => {
                let details = ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1)));
                Status::with_error_details(Code::Unavailable, why, details)
            }
            Error::Unavailable(source) => {
                tracing::warn!(error = %source, "storage unavailable");
                metrics::counter!("soko_dependency_errors_total", "dependency" => "database").increment(1);
                let mut details = ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1)));
                details.set_error_info("STORAGE_UNAVAILABLE", ERROR_DOMAIN, []);
                Status::with_error_details(
                    Code::Unavailable,
                    "the service is temporarily unavailable; retry with backoff",
                    details,
                )
            }
            Error::ReadOnly(cause) => {
                // No RetryInfo: the switch stays on until an operator turns it off, or until the
                // database answers again, so a client should tell its user rather than retry on
                // a short timer.
                let details = ErrorDetails::with_error_info(
                    READ_ONLY_REASON,
                    ERROR_DOMAIN,
                    [("cause".into(), cause.as_str().into())],
                );
                Status::with_error_details(
                    Code::Unavailable,
                    "the service is in read-only mode: reads work, writes are refused until it ends",
                    details,
                )
            }
            Error::DependencyUnavailable { dependency, source } => {
                tracing::warn!(dependency, error = format!("{source:#}"), "dependency unavailable");
                metrics::counter!("soko_dependency_errors_total", "dependency" => dependency).increment(1);
                let mut details = ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1)));
                details.set_error_info(
                    "DEPENDENCY_UNAVAILABLE",
                    ERROR_DOMAIN,
                    [("dependency".into(), dependency.into())],
                );
                Status::with_error_details(
                    Code::Unavailable,
                    format!("the {dependency} is temporarily unavailable; retry with backoff"),
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
    let fields: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect();
    format!("invalid argument: {}", fields.join("; "))
}

/// The canonical upper-case name of a status code, as audit events record it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
