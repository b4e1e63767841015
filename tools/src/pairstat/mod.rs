//! The pair at a glance, for the `pairstat` program: every broker's `STATUS`
//! ([`edgebroker::client::status::query`]) turned into one table of roles, epochs and message
//! rates, with every role or epoch change kept as an [`Event`] ([`View`]).
//!
//! Only [`poll`] and [`watch`] touch a socket or the terminal. A [`View`] is fed the answers
//! and the times they came at, and its [`Frame`]s render as a table ([`Frame::table`]) or a
//! JSON line ([`Frame::json`]), so tests drive it without a broker.
//!
//! Each address is one row, whatever answers there: the brokers, and with `--witness` the
//! pair's witness, whose `STATUS` says `role=witness` and the lease it holds. The `witness`
//! column shows each broker's view of the witness (and a primary's lease left), and the
//! witness's own lease left.
//!
//! | module | its one job |
//! |---|---|
//! | `poll` | one poll: every address asked its `STATUS` at once |
//! | `view` | successive polls as frames: rows, rates, role and epoch changes as events |
//! | `table` | a frame as a text table |
//! | `json` | a frame as one JSON line |
//! | `watch` | the program's loop: its options, then poll, draw, wait |

mod json;
mod poll;
mod table;
mod view;
mod watch;

pub use json::json_string;
pub use poll::{Reading, poll};
pub use table::{clock, printable};
pub use view::{Event, Frame, MARK_MS, RECENT_EVENTS, Rates, Row, View};
pub use watch::{DEFAULT_INTERVAL, MAX_ANSWER_TIME, Options, watch};

/// Readings and views for the tests of every module here.
#[cfg(test)]
mod test_support {
    use edgebroker::client::status::StatusFields;

    use super::{Reading, View};

    pub(super) fn fields(pairs: &[(&str, &str)]) -> StatusFields {
        StatusFields(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub(super) fn broker(role: &str, epoch: &str, published: u64) -> Reading {
        let published = published.to_string();
        Reading::Up(fields(&[
            ("role", role),
            ("epoch", epoch),
            ("backup", "up"),
            ("pending", "2"),
            ("published", &published),
            ("processed", &published),
            ("delivered", "0"),
            ("takeovers", "0"),
        ]))
    }

    pub(super) fn view() -> View {
        View::new(vec!["a:1".into(), "b:2".into()])
    }
}
