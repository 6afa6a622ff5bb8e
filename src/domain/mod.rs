//! The marketplace's rules, independent of transport: nothing here knows about gRPC.

pub mod catalog;
pub mod error;
pub mod listing;
pub mod product;

pub use error::{Error, FieldViolation};
