//! Small shared pieces for the tasks around a wallet and a relay: a lock that survives a
//! panic elsewhere, and a token bucket for rate limits.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Lock `m`, carrying on if a thread panicked while holding it: a wallet, a store or a map of
/// counters is never left half-written by a panic (every change to a wallet is a transaction).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
