//! A budget for the warnings peers can cause (bad records, refused
//! connections, failed TLS handshakes): a hostile or broken client opening
//! thousands of connections a second must not flood the log. Every event is still
//! counted in the metrics; the log gets the first few per minute and, with
//! the next one let through, how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Warnings let through per window.
const PER_WINDOW: u32 = 20;
/// The window.
const WINDOW: Duration = Duration::from_secs(60);

/// Decides which peer-caused warnings reach the log.
#[derive(Debug)]
pub struct WarnBudget {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    let_through: u32,
    left_out: u64,
}

impl Default for WarnBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl WarnBudget {
    /// A fresh budget.
    pub fn new() -> Self {
        WarnBudget {
            state: Mutex::new(Window {
                started: Instant::now(),
                let_through: 0,
                left_out: 0,
            }),
        }
    }

    /// `Some(warnings left out since the last one let through)` when this
    /// warning may be logged, `None` when it is left out.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(window.started) >= WINDOW {
            window.started = now;
            window.let_through = 0;
        }
        if window.let_through < PER_WINDOW {
            window.let_through += 1;
            Some(std::mem::take(&mut window.left_out))
        } else {
            window.left_out += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_next_window_says_how_many_went_unlogged() {
        let budget = WarnBudget::new();
        let start = Instant::now();
        let admitted = (0..1000)
            .filter(|_| budget.admit_at(start).is_some())
            .count();
        assert_eq!(admitted, PER_WINDOW as usize);
        assert_eq!(
            budget.admit_at(start + WINDOW),
            Some(1000 - u64::from(PER_WINDOW))
        );
        assert_eq!(budget.admit_at(start + WINDOW), Some(0));
    }
}
