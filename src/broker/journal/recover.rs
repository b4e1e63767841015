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
            // The first line is torn only if it could be the start of a header: any other
            // file is no log of ours, and is not overwritten.
            _ if restored.is_none() && !could_start_a_header(line) => {
                return Err(refuse("not a message log (no EDGELOG header)".into()));
            }
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

/// Whether `line` is what a crash in the middle of writing the header leaves: eight hex
/// digits, a space and `EDGELOG|`, or the start of them, and no newline.
fn could_start_a_header(line: &[u8]) -> bool {
    let shape = b"00000000 EDGELOG|";
    let fits = |(i, &b): (usize, &u8)| match i {
        0..8 => b.is_ascii_hexdigit(),
        _ => b == shape[i],
    };
    !line.ends_with(b"\n") && line.iter().take(shape.len()).enumerate().all(fits)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::{Message, MsgId};

    /// Writes `records` to a fresh file and reads it back.
    fn read_back(name: &str, records: &[Record], tail: &[u8]) -> Result<Option<Restored>> {
        let dir = std::env::temp_dir().join(format!("edgebroker-recover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut bytes = Vec::new();
        for record in records {
            record.encode(&mut bytes);
        }
        bytes.extend_from_slice(tail);
        std::fs::write(&path, bytes).unwrap();
        read(&path, &BrokerConfig::fast())
    }

    fn header(version: u32, pair: &str) -> Record {
        let pair = pair.into();
        Record::Header {
            version,
            pair,
            node: 42,
        }
    }

    fn hold(index: u64, seq: u64) -> Record {
        let id = MsgId { publisher: 9, seq };
        let (topic, payload) = ("t".into(), format!("m{seq}"));
        let message = Arc::new(Message { id, topic, payload });
        Record::Hold { index, message }
    }

    fn refusal(outcome: Result<Option<Restored>>) -> String {
        match outcome {
            Err(Error::DataDir(why)) => why,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("read back"),
        }
    }

    #[test]
    fn the_lines_are_applied_in_order_as_the_broker_applied_them() {
        let epoch = Epoch { term: 3, node: 42 };
        let records = [
            header(VERSION, "default"),
            Record::Epoch {
                epoch,
                next_index: 10,
            },
            hold(10, 1),
            hold(11, 2),
            hold(12, 3),
            Record::Done { index: 11 },
        ];
        let r = read_back("order", &records, b"").unwrap().unwrap();
        assert_eq!((r.node, r.epoch, r.log.next_index()), (42, epoch, 13));
        let held: Vec<u64> = r.log.pending().map(|(i, _)| i).collect();
        assert_eq!(held, [10, 12]);
        let r = read_back("reset", &[&records[..], &[Record::Reset]].concat(), b"");
        assert!(r.unwrap().unwrap().log.is_empty());
    }

    #[test]
    fn nothing_to_read_is_a_fresh_log_and_a_torn_tail_is_dropped() {
        assert!(read_back("empty", &[], b"").unwrap().is_none());
        assert!(read_back("torn-header", &[], b"0000").unwrap().is_none());
        assert!(
            read_back("torn-header-2", &[], b"3a0c51f2 EDGELOG|1|de")
                .unwrap()
                .is_none()
        );
        let records = [header(VERSION, "default"), hold(1, 1)];
        let r = read_back("torn", &records, b"1234abcd HOLD|2|9|")
            .unwrap()
            .unwrap();
        assert_eq!(r.log.len(), 1);
        let r = read_back("bad-last", &records, b"1234abcd DONE|1\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.log.len(),
            1,
            "a last line whose checksum fails is torn too"
        );
    }

    #[test]
    fn another_version_a_missing_header_or_a_second_one_is_refused() {
        let why = refusal(read_back("v2", &[header(2, "default")], b""));
        assert!(why.ends_with("written in format version 2; this broker reads version 1"));
        let why = refusal(read_back("headless", &[hold(1, 1), hold(2, 2)], b""));
        assert!(
            why.ends_with("not a message log (no EDGELOG header)"),
            "{why}"
        );
        for other in [
            &b"hello\n"[..],
            b"hello",
            b"3a0c51f2 EDGELOG|1|default|42\n",
        ] {
            let why = refusal(read_back("other", &[], other));
            assert!(
                why.ends_with("not a message log (no EDGELOG header)"),
                "{why}"
            );
        }
        let twice = [header(VERSION, "default"), header(VERSION, "default")];
        let why = refusal(read_back("twice", &twice, b""));
        assert!(why.ends_with("line 2 is a second header"), "{why}");
    }
}
