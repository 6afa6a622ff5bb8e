//! Logging setup: JSON lines in production (one object per event, for log shippers), readable
//! text in development.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::configuration::{Config, LogFormat};

/// Installs the global subscriber. Safe to call more than once (tests start many servers); only
/// the first call takes effect.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
}
