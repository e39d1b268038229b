//! Exact watchlist matching: the matrix, the kernels and the matcher that drives them.
//!
//! Plain Rust with no Python types; `crate::py_matcher` wraps it for Python.

#[cfg(target_arch = "aarch64")]
mod aarch64;
mod backing;
mod exact;
mod helper;
mod kernel;
mod matcher;
mod scalar;
mod store;
mod topk;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use backing::Memory;
pub use kernel::Kernel;
pub use matcher::{Matcher, SearchResult};
pub use store::{normalize, quantize_i8, Dtype, LANES};
