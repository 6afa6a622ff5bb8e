//! Which Soko this is: the crate version and the git commit it was built from (see `build.rs`).
//! Shown by `soko --version`, the start-up log line, `/health/ready` and the `soko_build_info`
//! metric, so an operator can tell which build answers without shelling into the container.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("SOKO_GIT_COMMIT");

/// `0.1.0 (1a2b3c4d5e6f)`.
pub fn describe() -> String {
    format!("{VERSION} ({GIT_COMMIT})")
}
