//! The wire protocol: every line a broker can receive ([`Request`]) or send ([`Reply`]),
//! parsed from and encoded to bytes. Nothing here touches a socket, so every rule is tested
//! on byte slices.
//!
//! A line is `VERB|field|field|…` ended by `\n` (the `\n` and an optional `\r` before it are
//! stripped by [`crate::connection`] before a line reaches [`Request::parse`]). The last field of
//! a verb that carries a payload is the rest of the line and may contain `|`. Verbs are
//! upper-case; `publish` is an unknown verb, not an alias. PROTOCOL.md documents every verb.
//!
//! | module | its one job |
//! |---|---|
//! | `epoch` | the epoch and its rules: order, counting up, which epochs may be adopted |
//! | `message` | a published message and its id |
//! | `peer` | a broker's role, the state it tells its peer, the secret a connection proves |
//! | `fields` | the field parser the brokers' and the witness's lines share |
//! | `request` | every line a broker accepts |
//! | `reply` | every line a broker sends |

mod epoch;
mod fields;
mod message;
mod peer;
mod reply;
mod request;

pub use epoch::{Epoch, Heard};
pub use fields::ParseError;
pub(crate) use fields::{Fields, write_status};
pub use message::{Message, MsgId, publisher_id};
pub use peer::{AuthKind, PeerState, Role};
pub use reply::Reply;
pub use request::Request;

/// A message with the given id, topic and payload, for the tests of every module here.
#[cfg(test)]
fn msg(publisher: u64, seq: u64, topic: &str, payload: &str) -> Message {
    Message {
        id: MsgId { publisher, seq },
        topic: topic.into(),
        payload: payload.into(),
    }
}
