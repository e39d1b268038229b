//! A helper thread for two-way split scans that spins briefly between jobs.
//!
//! Waking a sleeping thread costs tens of microseconds, as much as scanning a
//! megabyte-sized watchlist. The helper spins for a short while after each job, so
//! back-to-back searches (a stream of frames, a batch of probes) hand it the second half
//! of a scan without that cost; after `SPIN` of idleness it parks.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the helper spins for new work before parking.
const SPIN: Duration = Duration::from_micros(200);

const IDLE: u32 = 0;
const POSTED: u32 = 1;
const DONE: u32 = 2;
const PANICKED: u32 = 3;
const EXIT: u32 = 4;

/// A type-erased job: a function and the `Option<F>` it takes the closure from.
#[derive(Clone, Copy)]
struct ErasedJob {
    call: unsafe fn(*mut ()),
    data: *mut (),
}

struct Shared {
    state: AtomicU32,
    job: UnsafeCell<Option<ErasedJob>>,
}

// SAFETY: `job` is written only by the thread holding `Helper::busy` while the state is
// IDLE, and read by the helper only after it observes POSTED (release/acquire), so the
// two threads never access it at the same time.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointers inside are only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// The helper thread and its mailbox.
pub struct Helper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    busy: Mutex<()>,
}

impl Helper {
    /// Starts the helper thread, or returns `None` if the system refuses a thread.
    pub fn start() -> Option<Helper> {
        let shared = Arc::new(Shared {
            state: AtomicU32::new(IDLE),
            job: UnsafeCell::new(None),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("lfr-match-helper".into())
            .spawn(move || work(&theirs))
            .ok()?;
        Some(Helper {
            shared,
            thread: Some(thread),
            busy: Mutex::new(()),
        })
    }

    /// Runs `first` on this thread and `second` on the helper, and returns when both
    /// are done. If another split holds the helper, runs both here.
    pub fn run_pair<A: FnOnce(), B: FnOnce() + Send>(&self, first: A, second: B) {
        let _guard = match self.busy.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                first();
                second();
                return;
            }
        };
        let mut slot = Some(second);
        let job = ErasedJob {
            call: call_once::<B>,
            data: (&mut slot as *mut Option<B>).cast(),
        };
        // SAFETY: we hold `busy` and the helper is IDLE (every split waits for it to
        // finish below), so nothing else touches the mailbox now.
        unsafe { *self.shared.job.get() = Some(job) };
        self.shared.state.store(POSTED, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
        // `slot` lives on this stack frame: wait for the helper even if `first` panics.
        let wait = WaitForHelper(&self.shared);
        first();
        drop(wait);
    }
}

/// Blocks until the helper has finished the posted job, then re-raises its panic.
struct WaitForHelper<'a>(&'a Shared);

impl Drop for WaitForHelper<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        let state = loop {
            match self.0.state.load(Ordering::Acquire) {
                s @ (DONE | PANICKED) => break s,
                _ if spins < 1 << 14 => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                _ => std::thread::yield_now(),
            }
        };
        self.0.state.store(IDLE, Ordering::Release);
        if state == PANICKED && !std::thread::panicking() {
            resume_unwind(Box::new("a matcher helper thread panicked"));
        }
    }
}

/// Takes the closure out of its slot and runs it.
///
/// # Safety
/// `data` points to a live `Option<F>` that no one else accesses during the call.
unsafe fn call_once<F: FnOnce()>(data: *mut ()) {
    // SAFETY: the caller's contract.
    let slot = unsafe { &mut *data.cast::<Option<F>>() };
    if let Some(f) = slot.take() {
        f();
    }
}

/// The helper's loop: spin for work, park when idle, exit when told.
fn work(shared: &Shared) {
    loop {
        let mut idle_since = Instant::now();
        loop {
            match shared.state.load(Ordering::Acquire) {
                POSTED => break,
                EXIT => return,
                _ if idle_since.elapsed() < SPIN => {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
                _ => {
                    std::thread::park();
                    idle_since = Instant::now();
                }
            }
        }
        // SAFETY: POSTED was observed with acquire ordering after the poster wrote the
        // job, and the poster does not touch the mailbox until DONE/PANICKED.
        let job = unsafe { (*shared.job.get()).take() };
        let outcome = match job {
            // SAFETY: the poster keeps `data` alive and untouched until it sees DONE.
            Some(job) => catch_unwind(AssertUnwindSafe(|| unsafe { (job.call)(job.data) })),
            None => Ok(()),
        };
        let done = if outcome.is_ok() { DONE } else { PANICKED };
        shared.state.store(done, Ordering::Release);
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.shared.state.store(EXIT, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // A helper that panicked outside a job has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_both_halves_many_times() {
        let helper = Helper::start().expect("thread");
        for i in 0..2000u64 {
            let (mut a, mut b) = (0u64, 0u64);
            helper.run_pair(|| a = i, || b = i * 2);
            assert_eq!((a, b), (i, i * 2));
            if i % 500 == 0 {
                std::thread::sleep(Duration::from_millis(1)); // let it park
            }
        }
    }

    #[test]
    fn concurrent_callers_all_finish() {
        let helper = Helper::start().expect("thread");
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let helper = &helper;
                s.spawn(move || {
                    for i in 0..500u64 {
                        let (mut a, mut b) = (0u64, 0u64);
                        helper.run_pair(|| a = i + t, || b = i * t);
                        assert_eq!((a, b), (i + t, i * t));
                    }
                });
            }
        });
    }

    #[test]
    fn a_panic_in_the_helper_reaches_the_caller() {
        let helper = Helper::start().expect("thread");
        let r = catch_unwind(AssertUnwindSafe(|| {
            helper.run_pair(|| (), || panic!("boom"))
        }));
        assert!(r.is_err());
        let mut ok = false;
        helper.run_pair(|| (), || ok = true);
        assert!(ok);
    }
}
