//! The field parser: a line split into its verb and `|`-separated fields, each field checked
//! and typed, and why a line was refused ([`ParseError`]). The witness's lines use it too.

use std::fmt;
use std::str::FromStr;

use super::{Epoch, Message, MsgId, PeerState, Role};

/// Why a line could not be parsed; its text goes back to the client as `ERR|<reason>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl ParseError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        ParseError(reason.into())
    }

    /// The human-readable reason.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl From<String> for ParseError {
    fn from(reason: String) -> Self {
        ParseError(reason)
    }
}

/// Splits a line into its verb and fields; the last of `n` fields takes the rest of the line.
/// The witness's verbs (`crate::witness::protocol`) are parsed with it too.
pub(crate) struct Fields<'a> {
    pub(crate) verb: &'a str,
    pub(crate) rest: Option<&'a str>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(line: &'a [u8]) -> Result<Self, ParseError> {
        let line =
            std::str::from_utf8(line).map_err(|_| ParseError::new("line is not valid UTF-8"))?;
        if line.contains('\n') {
            return Err(ParseError::new("line contains a newline"));
        }
        let (verb, rest) = split_bar(line);
        Ok(Fields { verb, rest })
    }

    /// The next `|`-separated field.
    pub(crate) fn field(&mut self, what: &str) -> Result<&'a str, ParseError> {
        let (field, rest) = split_bar(self.rest.ok_or_else(|| missing(self.verb, what))?);
        self.rest = rest;
        Ok(field)
    }

    /// Everything left, `|` included (a payload).
    pub(crate) fn tail(&mut self, what: &str) -> Result<&'a str, ParseError> {
        self.rest.take().ok_or_else(|| missing(self.verb, what))
    }

    pub(super) fn topic(&mut self) -> Result<String, ParseError> {
        let topic = self.field("topic")?;
        if topic.is_empty() {
            return Err(ParseError::new("empty topic"));
        }
        if topic.trim() != topic {
            return Err(format!("topic '{topic}' has leading or trailing whitespace").into());
        }
        Ok(topic.to_string())
    }

    /// The rest of the line as a payload. A payload ending in `\r` is refused: the `\r\n`
    /// line ending of every hop would swallow that byte.
    pub(super) fn payload(&mut self) -> Result<String, ParseError> {
        let payload = self.tail("payload")?;
        if payload.ends_with('\r') {
            return Err(ParseError::new(
                "payload ends in a carriage return, which the line ending would swallow",
            ));
        }
        Ok(payload.to_string())
    }

    pub(crate) fn number<T: FromStr>(&mut self, what: &str) -> Result<T, ParseError> {
        number(self.field(what)?, what)
    }

    pub(crate) fn epoch(&mut self) -> Result<Epoch, ParseError> {
        self.field("epoch")?.parse()
    }

    pub(crate) fn hex(&mut self, what: &str) -> Result<String, ParseError> {
        let text = self.field(what)?;
        if text.is_empty() || text.len() > 128 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad {what} (want hex)").into());
        }
        Ok(text.to_string())
    }

    /// A message id: any publisher, a sequence number from 1.
    pub(super) fn id(&mut self, publisher: &str) -> Result<MsgId, ParseError> {
        let publisher = self.number(publisher)?;
        let seq = self.number("seq")?;
        if seq == 0 {
            return Err(ParseError::new("seq must be at least 1"));
        }
        Ok(MsgId { publisher, seq })
    }

    pub(crate) fn message(&mut self, publisher: &str) -> Result<Message, ParseError> {
        let id = self.id(publisher)?;
        let topic = self.topic()?;
        let payload = self.payload()?;
        Ok(Message { id, topic, payload })
    }

    /// `<epoch>|[<role>|]<node>|<preferred>`: a peer's state, as PONG (`with_role`) or PROBE
    /// (without, from a broker that is asking, so a backup) carry it.
    pub(super) fn peer_state(&mut self, with_role: bool) -> Result<PeerState, ParseError> {
        Ok(PeerState {
            epoch: self.epoch()?,
            role: match with_role {
                true => self.field("role")?.parse()?,
                false => Role::Backup,
            },
            node: self.number("node")?,
            preferred: match self.field("preferred")? {
                "0" => false,
                "1" => true,
                text => return Err(format!("bad flag '{text}' (want 0 or 1)").into()),
            },
        })
    }

    /// The `key=value` fields of a `STATUS` line, up to its end.
    pub(crate) fn status_pairs(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        let mut pairs = Vec::new();
        while self.rest.is_some() {
            let pair = self.field("key=value")?;
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("bad status field '{pair}'"))?;
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(pairs)
    }

    /// Fails if fields remain after the last one a verb takes.
    pub(crate) fn end(self) -> Result<(), ParseError> {
        match self.rest {
            None => Ok(()),
            Some(_) => Err(format!("too many fields for {}", self.verb).into()),
        }
    }
}

/// Writes a `STATUS` line of `key=value` fields (without its `\n`).
pub(crate) fn write_status(f: &mut fmt::Formatter<'_>, pairs: &[(String, String)]) -> fmt::Result {
    f.write_str("STATUS")?;
    pairs.iter().try_for_each(|(k, v)| write!(f, "|{k}={v}"))
}

/// `text` up to its first `|`, and what follows that `|` if there is one.
fn split_bar(text: &str) -> (&str, Option<&str>) {
    text.split_once('|')
        .map_or((text, None), |(head, tail)| (head, Some(tail)))
}

fn missing(verb: &str, what: &str) -> ParseError {
    format!("{verb} is missing its {what}").into()
}

pub(super) fn number<T: FromStr>(text: &str, what: &str) -> Result<T, ParseError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} '{text}'").into());
    }
    text.parse()
        .map_err(|_| format!("{what} '{text}' is out of range").into())
}
