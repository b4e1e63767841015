//! Made-up runs the report's unit tests share: deliveries at given moments, a steady stream, a
//! run with one failover.

use super::{Delivery, Source};

/// One delivery of `seq` from `source` at `at_ms`.
pub fn d(at_ms: u64, source: Source, seq: u64) -> Delivery {
    Delivery { at_ms, source, seq }
}

/// Deliveries of `seqs` from the primary, 100 ms apart starting at t = 1000.
pub fn steady(seqs: impl IntoIterator<Item = u64>) -> Vec<Delivery> {
    seqs.into_iter()
        .enumerate()
        .map(|(i, seq)| d(1000 + 100 * i as u64, Source::Primary, seq))
        .collect()
}

/// Primary until 1500, a kill at 1550, the backup from 2750: a 1250 ms silence.
pub fn one_failover() -> Vec<Delivery> {
    let mut got = steady(1..=6);
    got.extend((7..=10).map(|seq| d(2750 + 100 * (seq - 7), Source::Backup, seq)));
    got
}
