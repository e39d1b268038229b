//! The crate's one error type, and its conversion into Python exceptions.
//!
//! Messages never carry biometric data: they name positions, sizes and the caller's own
//! watchlist ids, never vector values.

use std::fmt;

/// Everything the native core can refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A vector's length does not match the matcher's dimension.
    Dim { expected: usize, got: usize },
    /// Two arrays that must agree in length do not.
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A vector holds NaN or an infinity (`index` is its row in the call).
    NonFinite { what: &'static str, index: usize },
    /// A vector has zero length and cannot be normalised.
    Zero { what: &'static str, index: usize },
    /// An id appears twice in one call, or is already in the matcher.
    DuplicateId { id: i64, already_present: bool },
    /// The id -1 marks empty result slots, so it cannot name an entry.
    ReservedId,
    /// `remove` was asked for an id that is not in the matcher.
    UnknownId { id: i64 },
    /// A parameter is out of its range.
    Invalid(String),
    /// A kernel was requested that this CPU or build does not have.
    KernelUnavailable { kernel: &'static str },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dim { expected, got } => {
                write!(
                    f,
                    "vectors have dimension {got}, the matcher expects {expected}"
                )
            }
            Error::Length {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected}, got {got}"),
            Error::NonFinite { what, index } => {
                write!(f, "{what} {index} contains NaN or infinity")
            }
            Error::Zero { what, index } => {
                write!(
                    f,
                    "{what} {index} is a zero vector and cannot be normalised"
                )
            }
            Error::DuplicateId {
                id,
                already_present: true,
            } => write!(f, "id {id} is already in the matcher"),
            Error::DuplicateId { id, .. } => write!(f, "id {id} appears more than once"),
            Error::ReservedId => write!(f, "id -1 is reserved for empty result slots"),
            Error::UnknownId { id } => write!(f, "id {id} is not in the matcher"),
            Error::Invalid(msg) => f.write_str(msg),
            Error::KernelUnavailable { kernel } => {
                write!(f, "kernel {kernel:?} is not available on this CPU or build")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(feature = "python")]
impl From<Error> for pyo3::PyErr {
    fn from(err: Error) -> Self {
        use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
        let msg = err.to_string();
        match err {
            Error::UnknownId { .. } => PyKeyError::new_err(msg),
            Error::KernelUnavailable { .. } => PyRuntimeError::new_err(msg),
            _ => PyValueError::new_err(msg),
        }
    }
}
