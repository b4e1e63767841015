//! Blocking clients with the failover behaviour of the programs: [`Publisher`] and
//! [`Subscriber`]; and [`status`], asking a broker its STATUS (what `pairstat` shows).

use std::fmt;

mod publisher;
pub mod status;
mod subscriber;

pub use publisher::{MAX_WINDOW, Outcome, Publisher};
pub use subscriber::{Closer, Delivery, Subscriber};

/// The broker a message was delivered by, as labelled in the subscriber's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Delivered on the connection to the broker started as primary (`[PRIMARY]`).
    Primary,
    /// Delivered on the connection to the broker started as backup (`[BACKUP]`).
    Backup,
}

impl Source {
    /// The label the subscriber prints for this source, brackets included.
    pub fn label(self) -> &'static str {
        match self {
            Source::Primary => "[PRIMARY]",
            Source::Backup => "[BACKUP]",
        }
    }
}

/// Shows `PRIMARY` or `BACKUP`; [`Source::label`] adds the brackets the subscriber prints.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label().trim_matches(['[', ']']))
    }
}
