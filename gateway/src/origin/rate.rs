//! A node-wide cap on the bytes read from origins per second, so a sidecar filling its cache
//! does not take the host's whole link from the training job beside it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket holding at most one second of bytes; a read that overdraws it leaves a
/// debt the next readers wait out.
pub struct RateCap {
    rate: f64,
    state: Mutex<(Instant, f64)>,
}

impl RateCap {
    /// `None` for 0 (no cap).
    pub fn new(bytes_per_sec: u64) -> Option<Self> {
        (bytes_per_sec > 0).then(|| Self {
            rate: bytes_per_sec as f64,
            state: Mutex::new((Instant::now(), bytes_per_sec as f64)),
        })
    }

    /// How long a read of `n` bytes made now must wait to keep to the cap.
    fn debit(&self, n: u64, now: Instant) -> Duration {
        let Ok(mut s) = self.state.lock() else {
            return Duration::ZERO;
        };
        let (last, tokens) = *s;
        let refilled =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        let left = refilled - n as f64;
        *s = (now, left);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }

    /// Takes `n` bytes from the budget, waiting as long as the cap asks.
    pub async fn take(&self, n: u64) {
        let wait = self.debit(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let cap = RateCap::new(1000).unwrap();
        let t0 = Instant::now();
        assert_eq!(cap.debit(1000, t0), Duration::ZERO, "one second of burst");
        // 500 more at once: half a second of debt.
        assert_eq!(cap.debit(500, t0), Duration::from_millis(500));
        // A second later the debt is paid and 500 are back.
        assert_eq!(cap.debit(500, t0 + Duration::from_secs(1)), Duration::ZERO);
        assert!(RateCap::new(0).is_none());
    }
}
