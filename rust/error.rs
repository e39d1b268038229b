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
    /// `mlock` refused: `RLIMIT_MEMLOCK` (`limit`, `None` = unlimited) is too low for
    /// `requested` more bytes on top of the `locked` ones.
    LockFailed {
        requested: u64,
        limit: Option<u64>,
        locked: u64,
        errno: i32,
    },
    /// The kernel refused `MADV_DONTDUMP` or `MADV_WIPEONFORK`.
    Unprotected { dontdump: bool, wipeonfork: bool },
    /// A secure buffer was used after `close()`.
    BufferClosed,
    /// A secure buffer cannot be closed while views of it exist.
    BufferExported { views: usize },
    /// A system call failed.
    Os { what: &'static str, errno: i32 },
}

/// A byte count for people: KiB below 1 MiB, MiB below 1 GiB, GiB above.
fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB * KIB {
        format!("{:.0} KiB", (b / KIB).ceil())
    } else if b < KIB * KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.2} GiB", b / (KIB * KIB * KIB))
    }
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
            Error::LockFailed {
                requested,
                limit,
                locked,
                errno,
            } => {
                let os = std::io::Error::from_raw_os_error(*errno);
                let budget = match limit {
                    Some(l) => format!(
                        "RLIMIT_MEMLOCK is {} and {} is locked already",
                        size(*l),
                        size(*locked)
                    ),
                    None => format!("{} is locked already", size(*locked)),
                };
                // No figure for this allocation alone: raised to it, the next one fails.
                write!(
                    f,
                    "cannot lock {} for face data ({os}): {budget}. Set the limit to the \
                     figure of the whole deployment, which `lfr run --print-memlock` and \
                     `Deployment.memlock_budget()` give (systemd `LimitMEMLOCK=`, \
                     `ulimit -l` in KiB, `docker run --ulimit memlock=` in bytes, or \
                     /etc/security/limits.conf), grant CAP_IPC_LOCK, or pass \
                     allow_unlocked=True to run with memory that may be swapped to disk",
                    size(*requested),
                )
            }
            Error::Unprotected {
                dontdump,
                wipeonfork,
            } => {
                let missing: Vec<&str> = [
                    (!dontdump, "MADV_DONTDUMP"),
                    (!wipeonfork, "MADV_WIPEONFORK"),
                ]
                .into_iter()
                .filter_map(|(m, name)| m.then_some(name))
                .collect();
                write!(
                    f,
                    "the kernel refused {} for face data (Linux 4.14 or later is needed); \
                     pass allow_unlocked=True to run without it",
                    missing.join(" and ")
                )
            }
            Error::BufferClosed => write!(f, "the secure buffer is closed"),
            Error::BufferExported { views } => write!(
                f,
                "the secure buffer still has {views} view(s); delete the arrays and \
                 memoryviews made from it first"
            ),
            Error::Os { what, errno } => {
                write!(
                    f,
                    "{what} failed: {}",
                    std::io::Error::from_raw_os_error(*errno)
                )
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
        use pyo3::exceptions::{
            PyBufferError, PyKeyError, PyMemoryError, PyOSError, PyRuntimeError, PyValueError,
        };
        let msg = err.to_string();
        match err {
            Error::UnknownId { .. } => PyKeyError::new_err(msg),
            Error::KernelUnavailable { .. } => PyRuntimeError::new_err(msg),
            Error::LockFailed { .. } | Error::Unprotected { .. } => {
                // lfr.errors.SecureMemoryError is both an LfrError and a MemoryError; the
                // plain MemoryError is for `_core` loaded without its package.
                use pyo3::types::PyAnyMethods;
                pyo3::Python::attach(|py| {
                    let class = py
                        .import("lfr.errors")
                        .and_then(|m| m.getattr("SecureMemoryError"))
                        .ok()
                        .and_then(|c| c.cast_into::<pyo3::types::PyType>().ok());
                    match class {
                        Some(ty) => pyo3::PyErr::from_type(ty, msg),
                        None => PyMemoryError::new_err(msg),
                    }
                })
            }
            Error::BufferClosed | Error::BufferExported { .. } => PyBufferError::new_err(msg),
            Error::Os { errno, .. } => PyOSError::new_err((errno, msg)),
            _ => PyValueError::new_err(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_failed_points_to_the_deployment_figure() {
        let msg = Error::LockFailed {
            requested: 1 << 20,
            limit: Some(64 << 10),
            locked: 8 << 10,
            errno: libc::ENOMEM,
        }
        .to_string();
        assert!(msg.contains("cannot lock 1.0 MiB"), "{msg}");
        assert!(msg.contains("RLIMIT_MEMLOCK is 64 KiB and 8 KiB is locked already"));
        assert!(msg.contains("lfr run --print-memlock"), "{msg}");
        assert!(msg.contains("Deployment.memlock_budget()"), "{msg}");
        // No limit that covers only the allocation that failed (1 MiB + 8 KiB).
        assert!(!msg.contains("at least"), "{msg}");
        assert!(!msg.contains("1032"), "{msg}");
    }
}
