//! Small shared pieces for the tasks around a wallet and a relay: a lock that survives a
//! panic elsewhere and that a task can wait for without holding its thread, and a token
//! bucket for rate limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Instant;

/// Lock `m`, carrying on if a thread panicked while holding it: a wallet, a store or a map of
/// counters is never left half-written by a panic (every change to a wallet is a transaction).
/// Blocks the thread while another holds it; in a task, [`Shared::lock_async`] waits without.
pub fn lock<T>(m: &Mutex<T>) -> Guard<'_, T> {
    Guard {
        inner: Some(m.lock().unwrap_or_else(|p| p.into_inner())),
        profiled: None,
    }
}

/// Tasks waiting in [`lock_async`] for some lock, and the signal that wakes them: every
/// release of a lock taken by [`lock`] or [`lock_async`] while one waits.
static WAITING: AtomicUsize = AtomicUsize::new(0);
static RELEASED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Lock `m` from a task: while another holds it, the task waits and its runtime thread runs
/// other tasks. A thread blocked on a wallet's lock was a core left idle under load: with a
/// thread per core and many wallets in one process (the load generator, a relay's tests), one
/// wallet's long step (a batch of mail: its signature checks and commit) held up the others'
/// work queued behind the blocked thread (`docs/benchmarks.md`, "Waiting for a wallet's lock").
///
/// Only a release through a [`Guard`] wakes the waiters, so a mutex that tasks wait for here
/// must be locked everywhere through [`lock`] or this function, not with `Mutex::lock` itself
/// (which would cost a waiter up to [`RECHECK`]): tasks reach it only through
/// [`Shared::lock_async`], whose mutex nothing else can reach. Needs a runtime with its timer
/// enabled, as the driver does.
async fn lock_async<T>(m: &Mutex<T>) -> Guard<'_, T> {
    lock_waiting(m, RECHECK).await
}

/// [`lock_async`], trying again unwoken after `recheck`.
async fn lock_waiting<T>(m: &Mutex<T>, recheck: std::time::Duration) -> Guard<'_, T> {
    loop {
        // Free (the usual case): taken at once, without counting as a waiter, so a release
        // elsewhere has no one to wake.
        if let Some(guard) = try_lock(m) {
            return guard;
        }
        let released = RELEASED.notified();
        tokio::pin!(released);
        // Registered before trying, so a release after the try below wakes this task.
        released.as_mut().enable();
        let _waiting = Waiting::start();
        // Pairs with the fence in `Guard::drop`: either this try sees the lock released, or
        // that release sees this task waiting (and wakes it).
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(guard) = try_lock(m) {
            return guard;
        }
        // Woken by the release; the timer only bounds the wait should a release bypass the
        // `Guard` (a mutex locked with `Mutex::lock` itself somewhere): a short delay then,
        // never a task left asleep.
        let _ = tokio::time::timeout(recheck, released).await;
    }
}

/// A value that threads and tasks share and may lock only through [`Shared::lock`] (a thread)
/// and [`Shared::lock_async`] (a task), whose releases wake the tasks waiting: the inner
/// `Mutex` is not reachable, so no caller can lock it with `Mutex::lock` itself and leave a
/// waiting task asleep for up to 2 ms. Wallets are shared this way
/// ([`crate::wallet::SharedWallet`]).
///
/// The inner mutex is out of reach:
///
/// ```compile_fail,E0616
/// let shared = offst_core::sync::Shared::new(0u32);
/// let _guard = shared.0.lock();
/// ```
///
/// and the locks that wake waiting tasks are not:
///
/// ```
/// let shared = offst_core::sync::Shared::new(0u32);
/// *shared.lock() += 1;
/// assert_eq!(shared.into_inner(), 1);
/// ```
pub struct Shared<T>(Mutex<T>);

impl<T> Shared<T> {
    /// Share `value`.
    pub const fn new(value: T) -> Shared<T> {
        Shared(Mutex::new(value))
    }

    /// Lock it from a thread ([`lock`]): blocks the thread while another holds it.
    pub fn lock(&self) -> Guard<'_, T> {
        self.profiled(lock(&self.0))
    }

    /// `guard`, timed from now if the lock profile is on.
    fn profiled<'a>(&'a self, mut guard: Guard<'a, T>) -> Guard<'a, T> {
        if crate::metrics::lock_profile_on() {
            guard.profiled = Some((self as *const Shared<T> as usize, Instant::now()));
        }
        guard
    }

    /// Lock it from a task: while another holds it, the task waits and its runtime thread
    /// runs other tasks (woken by the release).
    pub async fn lock_async(&self) -> Guard<'_, T> {
        self.profiled(lock_async(&self.0).await)
    }

    /// The value, no longer shared.
    pub fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// The longest a task in [`lock_async`] waits before it tries the lock again unwoken.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(2);

/// One task counted in [`WAITING`], until dropped (also when the task is cancelled while it
/// waits, so the count never stays up).
struct Waiting;

impl Waiting {
    fn start() -> Waiting {
        WAITING.fetch_add(1, Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Lock `m` if nobody holds it (a panic elsewhere does not count, as for [`lock`]).
fn try_lock<T>(m: &Mutex<T>) -> Option<Guard<'_, T>> {
    let inner = match m.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    Some(Guard {
        inner: Some(inner),
        profiled: None,
    })
}

/// A lock held through [`lock`] or [`Shared`]. Releasing it wakes the tasks waiting in
/// [`Shared::lock_async`], once the lock is free.
pub struct Guard<'a, T> {
    /// Always `Some` until dropped.
    inner: Option<MutexGuard<'a, T>>,
    /// With the lock profile on ([`crate::metrics::lock_profile_start`]), a [`Shared`]
    /// value's address and when it was locked.
    profiled: Option<(usize, Instant)>,
}

impl<T> std::ops::Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.inner {
            Some(g) => g,
            None => unreachable!("a guard is emptied only when dropped"),
        }
    }
}

impl<T> std::ops::DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.inner {
            Some(g) => g,
            None => unreachable!("a guard is emptied only when dropped"),
        }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Unlock first: a task woken before the lock is free would find it taken and wait
        // again, for a signal that may not come.
        drop(self.inner.take());
        if let Some((addr, since)) = self.profiled.take() {
            crate::metrics::lock_held(addr, since);
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        if WAITING.load(Ordering::SeqCst) > 0 {
            RELEASED.notify_waiters();
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            at: Instant::now(),
            rate: rate.max(0.001),
            burst,
        }
    }

    /// Take one token, or say how many milliseconds until there is one.
    pub fn take(&mut self) -> Result<(), u64> {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    /// Run `f` on a runtime with a single thread, in a thread of its own; `None` if it did not
    /// finish within a minute (a deadlock: the test then fails instead of hanging).
    fn on_one_thread<F, T>(f: F) -> Option<T>
    where
        F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = done.send(rt.block_on(f()));
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .ok()
    }

    /// A thread that holds `m` (through [`lock`], or `Mutex::lock` itself when `bypass`) from
    /// before this returns until told to go, and adds 1 before it lets go.
    fn held_by_a_thread(
        m: &Arc<Mutex<u32>>,
        bypass: bool,
    ) -> (std::thread::JoinHandle<()>, mpsc::Sender<()>) {
        let (go, wait_for_go) = mpsc::channel::<()>();
        let (held, is_held) = mpsc::channel::<()>();
        let m = m.clone();
        let holder = std::thread::spawn(move || {
            let add = |n: &mut u32| {
                let _ = held.send(());
                let _ = wait_for_go.recv();
                *n += 1;
            };
            if bypass {
                add(&mut m.lock().unwrap());
            } else {
                add(&mut lock(&m));
            }
        });
        is_held.recv().unwrap();
        (holder, go)
    }

    /// A task waiting for a lock leaves its thread to the other tasks, and the release wakes
    /// it. The lock's holder lets go only once another task on the same (single) runtime
    /// thread has run: with a lock that blocks the thread, as `lock` does, that task never
    /// runs and nothing finishes. The waiter's own second look is an hour away, so only the
    /// release's signal gets it in.
    #[test]
    fn a_task_waiting_for_a_lock_lets_the_others_on_its_thread_run() {
        let got = on_one_thread(|| {
            Box::pin(async {
                let m = Arc::new(Mutex::new(0u32));
                let (holder, go) = held_by_a_thread(&m, false);
                let waiter = {
                    let m = m.clone();
                    tokio::spawn(async move {
                        let mut g = lock_waiting(&m, std::time::Duration::from_secs(3600)).await;
                        *g += 10;
                        *g
                    })
                };
                // Runs only if the waiter does not hold the thread.
                let releaser = tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    go.send(()).unwrap();
                });
                releaser.await.unwrap();
                let seen = waiter.await.unwrap();
                holder.join().unwrap();
                seen
            })
        });
        assert_eq!(
            got,
            Some(11),
            "the waiter held its thread, or missed the release"
        );
    }

    /// A lock released without a `Guard` (taken with `Mutex::lock` itself) wakes no one; a
    /// task waiting for it still gets it, on its own next look.
    #[test]
    fn a_release_that_wakes_no_one_still_lets_the_waiter_in() {
        let got = on_one_thread(|| {
            Box::pin(async {
                let m = Arc::new(Mutex::new(0u32));
                let (holder, go) = held_by_a_thread(&m, true);
                let waiter = {
                    let m = m.clone();
                    tokio::spawn(async move { *lock_async(&m).await + 10 })
                };
                tokio::task::yield_now().await;
                go.send(()).unwrap();
                holder.join().unwrap();
                waiter.await.unwrap()
            })
        });
        assert_eq!(got, Some(11));
    }

    /// Many tasks on several threads and plain threads take turns on one lock: every change
    /// is made once, under the lock, and nobody is left waiting.
    #[test]
    fn tasks_and_threads_share_a_lock_without_losing_a_change() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let m = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..2_000 {
                        *lock(&m) += 1;
                    }
                })
            })
            .collect();
        rt.block_on(async {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let m = m.clone();
                    tokio::spawn(async move {
                        for _ in 0..500 {
                            let mut g = lock_async(&m).await;
                            let before = *g;
                            std::hint::spin_loop();
                            *g = before + 1;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock(&m), 2 * 2_000 + 16 * 500);
    }
}
