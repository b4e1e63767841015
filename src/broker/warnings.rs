//! Warnings that can come in floods (refused connections, failed logins, lines too long): the
//! first is logged, the rest are counted for a while and summed up in the next one logged, so
//! 3,000 failed logins make a few lines, not 3,000.

use std::time::{Duration, Instant};

use log::warn;
use parking_lot::Mutex;

/// How long after a logged warning its repeats are only counted.
pub const QUIET: Duration = Duration::from_secs(10);

/// One kind of warning, logged at most once per [`QUIET`] period.
#[derive(Debug, Default)]
pub struct Repeated {
    /// When the last one was logged, and how many came since.
    last: Mutex<Option<(Instant, u64)>>,
}

impl Repeated {
    /// Logs the warning `text` makes, unless one of its kind was logged less than [`QUIET`]
    /// ago; then it is only counted, and the next one logged says how many were left out.
    pub fn warn(&self, text: impl FnOnce() -> String) {
        let mut last = self.last.lock();
        if let Some((at, count)) = last.as_mut()
            && at.elapsed() < QUIET
        {
            *count += 1;
            return;
        }
        let left_out = last.map_or(0, |(_, count)| count);
        *last = Some((Instant::now(), 0));
        drop(last);
        match left_out {
            0 => warn!("{}", text()),
            n => warn!("{} ({n} more like it since the last such warning)", text()),
        }
    }
}

/// The broker's floods.
#[derive(Debug, Default)]
pub struct Warnings {
    /// A connection refused for want of a free slot.
    pub refused: Repeated,
    /// A failed authentication handshake.
    pub auth_failed: Repeated,
    /// A line over the limit.
    pub too_long: Repeated,
    /// An epoch we may not adopt ([`crate::protocol::Epoch::may_adopt`]).
    pub epochs_refused: Repeated,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many were counted and not logged since the last one logged.
    fn left_out(flood: &Repeated) -> u64 {
        flood.last.lock().map_or(0, |(_, count)| count)
    }

    #[test]
    fn repeats_within_the_quiet_period_are_counted_not_logged() {
        let flood = Repeated::default();
        for _ in 0..3000 {
            flood.warn(|| "refused".into());
        }
        // One logged, every other one counted.
        assert_eq!(left_out(&flood), 2999);
    }
}
