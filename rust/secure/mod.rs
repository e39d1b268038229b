//! Memory for faces: locked, undumpable, wipe-on-fork mappings that are zeroized with
//! volatile writes before they are reused or unmapped ([`region`]); process hardening and
//! the locked-memory budget ([`process`]); stack scrubbing for threads that computed on a
//! face ([`stack`]); and (feature `forensic-scan`, for tests) a scanner that proves that no copy of a face is left
//! in the process's memory ([`scan`]).

pub mod process;
pub mod region;
#[cfg(feature = "forensic-scan")]
pub mod scan;
pub mod stack;

pub use region::{Protection, SecureRegion};
