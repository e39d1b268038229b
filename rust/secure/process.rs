//! Process-wide settings that secure memory depends on: the page size, the locked-memory
//! budget (`RLIMIT_MEMLOCK`, `VmLck`, `CAP_IPC_LOCK`) and core-dump hardening.

use crate::error::{Error, Result};

/// `CAP_IPC_LOCK` lets a process lock memory beyond `RLIMIT_MEMLOCK`.
const CAP_IPC_LOCK: u32 = 14;

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// How much memory this process may lock, and how much it has locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemlockStatus {
    /// The soft `RLIMIT_MEMLOCK` in bytes; `None` when unlimited.
    pub limit: Option<u64>,
    /// Bytes locked now (`VmLck` in `/proc/self/status`); 0 where unknown.
    pub locked: u64,
    /// The process holds `CAP_IPC_LOCK`, so the limit does not apply.
    pub privileged: bool,
}

impl MemlockStatus {
    /// Bytes that can still be locked; `None` when there is no limit.
    pub fn headroom(&self) -> Option<u64> {
        if self.privileged {
            return None;
        }
        self.limit.map(|l| l.saturating_sub(self.locked))
    }
}

/// `getrlimit(resource)`, or `None` if it fails. A macro because the resource's C type
/// differs between glibc and musl.
macro_rules! rlimit {
    ($resource:expr) => {{
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` into the valid pointer it is given.
        (unsafe { libc::getrlimit($resource, &mut lim) } == 0).then_some(lim)
    }};
}

fn status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The locked-memory budget of this process.
pub fn memlock_status() -> MemlockStatus {
    let limit = rlimit!(libc::RLIMIT_MEMLOCK)
        .map(|l| l.rlim_cur)
        .filter(|&c| c != libc::RLIM_INFINITY);
    let locked = status_field("VmLck")
        .and_then(|v| v.strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let privileged = status_field("CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0);
    MemlockStatus {
        limit,
        locked,
        privileged,
    }
}

/// What [`harden`] found and changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// `RLIMIT_CORE` is 0 (soft and hard): the kernel writes no core file.
    pub core_dumps_disabled: bool,
    /// `PR_GET_DUMPABLE` is 0: no core dump, and other unprivileged processes of the same
    /// user can neither ptrace this one nor read its `/proc/<pid>/mem`.
    pub dumpable: bool,
}

/// Disables core dumps (`RLIMIT_CORE = 0`) and marks the process non-dumpable
/// (`PR_SET_DUMPABLE = 0`). Irreversible for the core limit: a process cannot raise its
/// hard limit again.
pub fn harden() -> Result<Hardening> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads one valid `rlimit`.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(Error::Os {
            what: "setrlimit(RLIMIT_CORE)",
            errno: errno(),
        });
    }
    set_dumpable(false)?;
    Ok(hardening())
}

/// Reads the current core-dump settings without changing them.
pub fn hardening() -> Hardening {
    let core = rlimit!(libc::RLIMIT_CORE);
    Hardening {
        core_dumps_disabled: core.is_some_and(|l| l.rlim_cur == 0 && l.rlim_max == 0),
        dumpable: dumpable(),
    }
}

/// `PR_GET_DUMPABLE != 0`.
pub fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// Sets `PR_SET_DUMPABLE`.
pub fn set_dumpable(on: bool) -> Result<()> {
    let flag: libc::c_ulong = on.into();
    // SAFETY: PR_SET_DUMPABLE takes an integer flag and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, flag, 0, 0, 0) } != 0 {
        return Err(Error::Os {
            what: "prctl(PR_SET_DUMPABLE)",
            errno: errno(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert!(page_size() >= 4096);
    }

    #[test]
    fn locked_bytes_are_counted() {
        let before = memlock_status().locked;
        let r = crate::secure::SecureRegion::new(1 << 20, true).unwrap();
        if r.protection().locked {
            // Other tests lock and unlock concurrently, so only a lower bound holds.
            let during = memlock_status().locked;
            assert!(
                during >= 1 << 20,
                "VmLck {during} after locking 1 MiB (was {before})"
            );
        }
    }
}
