//! Reading the log back when a broker starts: each line applied to a fresh message log through
//! the same calls that made it (`insert`, `note_seen`, `remove`, `clear`), so the log holds
//! again what it held, in order, with its ids, and the dedup table recognises every resend.
//!
//! A last line cut short by a crash mid-write is dropped, with a warning; a damaged line
//! before the last, a log of another pair, another format version or none at all is refused
//! with an error that says which.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use log::{info, warn};

use crate::broker::message_log::Log;
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::protocol::Epoch;

use super::record::{Record, VERSION};

/// What a broker starts from: its node id, the last epoch it led or followed, and its log.
pub struct Restored {
    pub node: u32,
    pub epoch: Epoch,
    pub log: Log,
}

impl Restored {
    /// Nothing read back: node `node`, epoch `0.0`, an empty log.
    pub fn fresh(node: u32, config: &BrokerConfig) -> Restored {
        Restored {
            node,
            epoch: Epoch::default(),
            log: Log::new(config.dedup_publishers),
        }
    }
}

/// Reads the log at `path`; `None` when there is none yet (no file, an empty one, or only a
/// torn first line).
pub fn read(path: &Path, config: &BrokerConfig) -> Result<Option<Restored>> {
    let refuse = |why: String| Error::DataDir(format!("{}: {why}", path.display()));
    let bytes = match load(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refuse(format!("cannot read: {e}"))),
    };
    let mut lines = bytes.split_inclusive(|&b| b == b'\n').peekable();
    let mut restored: Option<Restored> = None;
    let mut number = 0;
    while let Some(line) = lines.next() {
        number += 1;
        let record = match line.strip_suffix(b"\n").map(Record::decode) {
            Some(Ok(record)) => record,
            Some(Err(e)) if lines.peek().is_some() => {
                return Err(refuse(format!("line {number} is damaged: {e}")));
            }
            _ => {
                warn!(
                    "{}: dropping the last line, torn by a crash mid-write ({} bytes)",
                    path.display(),
                    line.len()
                );
                break;
            }
        };
        match (&mut restored, record) {
            (None, Record::Header { version, .. }) if version != VERSION => {
                return Err(refuse(format!(
                    "written in format version {version}; this broker reads version {VERSION}"
                )));
            }
            (None, Record::Header { pair, .. }) if pair != config.pair.as_str() => {
                return Err(refuse(format!(
                    "the log of pair '{pair}', not of '{}' (--pair): give each pair its own \
                     --data-dir",
                    config.pair
                )));
            }
            (None, Record::Header { node, .. }) => restored = Some(Restored::fresh(node, config)),
            (None, _) => return Err(refuse("not a message log (no EDGELOG header)".into())),
            (Some(_), Record::Header { .. }) => {
                return Err(refuse(format!("line {number} is a second header")));
            }
            (Some(r), record) => apply(r, record),
        }
    }
    if let Some(r) = &restored {
        info!(
            "read back {}: epoch {}, {} message(s) held",
            path.display(),
            r.epoch,
            r.log.len()
        );
    }
    Ok(restored)
}

/// The whole file, as long as it was when opened.
fn load(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::new();
    file.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// One line after the header, applied as the broker applied it.
fn apply(r: &mut Restored, record: Record) {
    match record {
        Record::Epoch { epoch, next_index } => {
            r.epoch = epoch;
            r.log.resume_at(next_index);
        }
        Record::Hold { index, message } => r.log.insert(index, message),
        Record::Seen { index, id } => r.log.note_seen(id, index),
        Record::Done { index } => drop(r.log.remove(index)),
        Record::Reset => r.log.clear(),
        Record::Header { .. } => {}
    }
}
