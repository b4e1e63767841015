//! One line of the log on disk: what it says ([`Record`]), how it is written (a CRC-32 of the
//! line, then the line, in the house's `VERB|field|…` form) and read back.
//!
//! ```text
//! 3a0c51f2 EDGELOG|1|default|48213          the header: format version, pair, our node id
//! 0c7d1e0a EPOCH|4.48213|17                 an epoch we led or followed, and the next index
//! 9e4b2c11 HOLD|17|1093|12|sensors|21.5     a message held at index 17 (its id, topic, payload)
//! 51aa02bd SEEN|3|1093|11                   a publisher's messages up to seq 11 were accepted
//! 77f0c3e9 DONE|17                          the message at index 17 was processed
//! 02c4d8f1 RESET                            the log was emptied (a new primary syncs us)
//! ```
//!
//! A line whose checksum does not match was torn by a crash mid-write (if it is the last) or
//! damaged (if it is not): `super::recover` drops the first and refuses the second.

use std::io::Write;
use std::sync::Arc;

use crate::protocol::{Epoch, Fields, Message, MsgId, ParseError};

/// The format version the header names; a log of another version is refused.
pub const VERSION: u32 = 1;

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The first line: the version, the pair (`--pair`) and this broker's node id.
    Header {
        version: u32,
        pair: String,
        node: u32,
    },
    /// We led or followed `epoch`; the log's next index was `next_index`.
    Epoch { epoch: Epoch, next_index: u64 },
    /// `Log::insert`: the message is held at `index`.
    Hold { index: u64, message: Arc<Message> },
    /// `Log::note_seen`: the publisher's messages up to `id.seq` were accepted.
    Seen { index: u64, id: MsgId },
    /// `Log::remove`: the message at `index` was processed.
    Done { index: u64 },
    /// `Log::clear`: everything was dropped.
    Reset,
}

/// Appends one line to `out`: the CRC-32 of the line in hex, a space, the line that `body`
/// writes, `\n`.
pub fn encode(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    body(out);
    let crc = crc32(&out[start + 9..]);
    out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
}

impl Record {
    /// The line, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode(out, |out| {
            // Writing into a Vec cannot fail.
            let _ = match self {
                Record::Header {
                    version,
                    pair,
                    node,
                } => write!(out, "EDGELOG|{version}|{pair}|{node}"),
                Record::Epoch { epoch, next_index } => write!(out, "EPOCH|{epoch}|{next_index}"),
                Record::Hold { index, message } => write!(out, "HOLD|{index}|{message}"),
                Record::Seen { index, id } => {
                    write!(out, "SEEN|{index}|{}|{}", id.publisher, id.seq)
                }
                Record::Done { index } => write!(out, "DONE|{index}"),
                Record::Reset => write!(out, "RESET"),
            };
        });
    }

    /// Reads one line (without its `\n`); `Err` if its checksum does not match or it is not a
    /// record.
    pub fn decode(line: &[u8]) -> Result<Record, ParseError> {
        let (crc, body) = match line.split_at_checked(9) {
            Some((head, body)) if head[8] == b' ' => (&head[..8], body),
            _ => return Err(ParseError::new("no checksum")),
        };
        let crc = std::str::from_utf8(crc).ok();
        if crc.and_then(|c| u32::from_str_radix(c, 16).ok()) != Some(crc32(body)) {
            return Err(ParseError::new("checksum does not match"));
        }
        let mut f = Fields::new(body)?;
        let record = match f.verb {
            "EDGELOG" => Record::Header {
                version: f.number("version")?,
                pair: f.field("pair")?.to_string(),
                node: f.number("node")?,
            },
            "EPOCH" => Record::Epoch {
                epoch: f.epoch()?,
                next_index: f.number("next index")?,
            },
            "HOLD" => Record::Hold {
                index: f.number("index")?,
                message: Arc::new(f.message("publisher")?),
            },
            "SEEN" => Record::Seen {
                index: f.number("index")?,
                id: MsgId {
                    publisher: f.number("publisher")?,
                    seq: f.number("seq")?,
                },
            },
            "DONE" => Record::Done {
                index: f.number("index")?,
            },
            "RESET" => Record::Reset,
            verb => return Err(format!("unknown record '{verb}'").into()),
        };
        match f.rest {
            Some(extra) if !matches!(record, Record::Hold { .. }) => {
                Err(format!("extra fields '{extra}'").into())
            }
            _ => Ok(record),
        }
    }
}

/// The CRC-32 of `bytes` (IEEE 802.3, as zlib and gzip compute it), a byte at a time from a
/// table built at compile time.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(record: &Record) -> Vec<u8> {
        let mut out = Vec::new();
        record.encode(&mut out);
        assert_eq!(out.pop(), Some(b'\n'));
        out
    }

    #[test]
    fn the_checksum_is_the_standard_crc32() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let message = Message {
            id: MsgId {
                publisher: 1093,
                seq: 12,
            },
            topic: "sensors".into(),
            payload: "a|b c".into(),
        };
        let records = [
            Record::Header {
                version: VERSION,
                pair: "site-3".into(),
                node: 48213,
            },
            Record::Epoch {
                epoch: Epoch {
                    term: 4,
                    node: 48213,
                },
                next_index: 17,
            },
            Record::Hold {
                index: 17,
                message: Arc::new(message),
            },
            Record::Seen {
                index: 3,
                id: MsgId {
                    publisher: 9,
                    seq: 11,
                },
            },
            Record::Done { index: 17 },
            Record::Reset,
        ];
        for record in records {
            assert_eq!(Record::decode(&line(&record)), Ok(record));
        }
    }

    #[test]
    fn a_changed_byte_or_a_cut_line_is_refused() {
        let good = line(&Record::Done { index: 170 });
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() = b'1';
        assert!(Record::decode(&flipped).is_err());
        for cut in 0..good.len() {
            assert!(Record::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut forged = Vec::new();
        encode(&mut forged, |out| out.extend_from_slice(b"DONE|1|2"));
        forged.pop();
        assert!(Record::decode(&forged).is_err(), "extra field");
    }
}
