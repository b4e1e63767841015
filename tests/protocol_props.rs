//! Property tests of the wire protocol: no input panics the parsers or the line reader, every
//! request and reply survives encode → parse unchanged, and the hostile cases stay closed:
//! every line built from an accepted message fits the limit it was accepted under, every byte
//! of an accepted payload survives a hop, no epoch past the limit is taken, and no key yields
//! a broker's id. The case counts are set here (`PROPTEST_CASES` raises them for a longer
//! run).

use edgebroker::connection::LineReader;
use edgebroker::protocol::{
    AuthKind, Epoch, Message, MsgId, PeerState, Reply, Request, Role, publisher_id,
};
use proptest::prelude::*;

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// A topic as the parser accepts it: no `|`, no newline, no whitespace at either end.
fn topic() -> impl Strategy<Value = String> {
    "[^|\\s]([^|\n\r]{0,14}[^|\\s])?"
}

fn payload() -> impl Strategy<Value = String> {
    "[^\n\r]{0,40}"
}

fn epoch() -> impl Strategy<Value = Epoch> {
    (0..=Epoch::MAX_TERM, any::<u32>()).prop_map(|(term, node)| Epoch { term, node })
}

fn message() -> impl Strategy<Value = Message> {
    (any::<u64>(), 1..=u64::MAX, topic(), payload()).prop_map(|(publisher, seq, topic, payload)| {
        Message {
            id: MsgId { publisher, seq },
            topic,
            payload,
        }
    })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Primary), Just(Role::Backup)]
}

fn hex() -> impl Strategy<Value = String> {
    "[0-9a-f]{1,64}"
}

fn kind() -> impl Strategy<Value = AuthKind> {
    prop_oneof![Just(AuthKind::Peer), Just(AuthKind::Client)]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (topic(), payload()).prop_map(|(topic, payload)| Request::Publish { topic, payload }),
        message().prop_map(Request::PublishId),
        topic().prop_map(|topic| Request::Subscribe { topic }),
        topic().prop_map(|topic| Request::SubscribeIds { topic }),
        Just(Request::Ping),
        Just(Request::Status),
        (epoch(), any::<u32>(), any::<bool>()).prop_map(|(epoch, node, preferred)| {
            Request::Probe(PeerState {
                epoch,
                role: Role::Backup,
                node,
                preferred,
            })
        }),
        (epoch(), any::<u64>()).prop_map(|(epoch, session)| Request::Sync { epoch, session }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(publisher, seq)| Request::Seen(MsgId { publisher, seq })),
        (epoch(), any::<u64>(), message()).prop_map(|(epoch, index, message)| {
            Request::Replicate {
                epoch,
                index,
                message,
            }
        }),
        (epoch(), any::<u64>()).prop_map(|(epoch, index)| Request::Clear { epoch, index }),
        epoch().prop_map(Request::Handover),
        (kind(), hex()).prop_map(|(kind, nonce)| Request::Hello { kind, nonce }),
        hex().prop_map(|proof| Request::Proof { proof }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        Just(Reply::Ack),
        (any::<u64>(), any::<u64>()).prop_map(|(publisher, seq)| Reply::AckId(MsgId {
            publisher,
            seq: seq.max(1)
        })),
        Just(Reply::Pong),
        (epoch(), role(), any::<u32>(), any::<bool>()).prop_map(
            |(epoch, role, node, preferred)| {
                Reply::PeerPong(PeerState {
                    epoch,
                    role,
                    node,
                    preferred,
                })
            }
        ),
        payload().prop_map(Reply::Err),
        (epoch(), message()).prop_map(|(epoch, message)| Reply::Msg { epoch, message }),
        any::<u64>().prop_map(|index| Reply::Replicated { index }),
        message().prop_map(Reply::Handoff),
        epoch().prop_map(|epoch| Reply::Synced { epoch }),
        epoch().prop_map(|epoch| Reply::Fenced { epoch }),
        prop::collection::vec(("[a-z_]{1,10}", "[^|=\n\r]{0,10}"), 0..5).prop_map(Reply::Status),
        (hex(), hex()).prop_map(|(nonce, proof)| Reply::Challenge { nonce, proof }),
        Just(Reply::Welcome),
    ]
}

/// Bytes that look like protocol lines often enough to reach deep into the parsers.
fn line_like() -> impl Strategy<Value = Vec<u8>> {
    let verb = prop_oneof![
        Just("PUBLISH"),
        Just("PUB"),
        Just("SUBSCRIBE"),
        Just("SUB"),
        Just("PING"),
        Just("STATUS"),
        Just("PROBE"),
        Just("SYNC"),
        Just("SEEN"),
        Just("REPLICATE"),
        Just("CLEAR"),
        Just("HANDOVER"),
        Just("HELLO"),
        Just("PROOF"),
        Just("ACK"),
        Just("PONG"),
        Just("ERR"),
        Just("MSG"),
        Just("REPLICATED"),
        Just("SYNCED"),
        Just("FENCED"),
        Just("CHALLENGE"),
        Just("WELCOME"),
        Just("publish"),
        Just(""),
    ];
    let field = prop_oneof![
        Just(String::new()),
        "[0-9]{1,25}".boxed(),
        "[0-9]{1,3}\\.[0-9]{1,3}".boxed(),
        "[a-f0-9]{1,70}".boxed(),
        "\\PC{0,12}".boxed(),
        Just("peer".to_string()),
        Just("primary".to_string()),
    ];
    (
        verb,
        prop::collection::vec(field, 0..8),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(verb, fields, junk)| {
            let mut line = verb.as_bytes().to_vec();
            for f in fields {
                line.push(b'|');
                line.extend_from_slice(f.as_bytes());
            }
            line.extend(junk);
            line
        })
}

proptest! {
    #![proptest_config(cases(20_000))]

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Request::parse(&bytes);
        let _ = Reply::parse(&bytes);
    }

    #[test]
    fn parsing_line_like_input_never_panics(line in line_like()) {
        let _ = Request::parse(&line);
        let _ = Reply::parse(&line);
    }

    #[test]
    fn every_request_round_trips(request in request()) {
        let mut line = Vec::new();
        request.encode(&mut line);
        prop_assert_eq!(line.pop(), Some(b'\n'));
        prop_assert_eq!(Request::parse(&line).unwrap(), request);
    }

    #[test]
    fn every_reply_round_trips(reply in reply()) {
        let mut line = reply.to_bytes();
        prop_assert_eq!(line.pop(), Some(b'\n'));
        prop_assert_eq!(Reply::parse(&line).unwrap(), reply);
    }
}

/// The line a broker sends for `request`, `\n` included.
fn request_line(request: &Request) -> Vec<u8> {
    let mut line = Vec::new();
    request.encode(&mut line);
    line
}

/// Reads the lines of `bytes` as a broker would.
fn lines_of(bytes: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut reader = LineReader::new(bytes, max);
    let mut lines = Vec::new();
    while let Ok(Some(line)) = reader.read_line() {
        lines.push(line.to_vec());
    }
    lines
}

proptest! {
    #![proptest_config(cases(5_000))]

    /// A broker accepts a message only if it `fits`; then every line it builds from it fits
    /// too, whatever the epoch, index and id, so the backup and the subscribers take them.
    #[test]
    fn every_line_built_from_a_message_that_fits_fits(
        message in message(),
        epoch in epoch(),
        index in any::<u64>(),
    ) {
        let limit = message.topic.len() + message.payload.len() + Message::ENVELOPE_BYTES;
        prop_assert!(message.fits(limit));
        let mut lines = vec![
            request_line(&Request::Replicate { epoch, index, message: message.clone() }),
            request_line(&Request::Adopt(message.clone())),
            request_line(&Request::PublishId(message.clone())),
        ];
        lines.push(Reply::Handoff(message.clone()).to_bytes());
        lines.push(Reply::Msg { epoch, message: message.clone() }.to_bytes());
        for line in lines {
            prop_assert!(line.len() - 1 <= limit, "{} > {limit}", line.len() - 1);
        }
    }

    /// Whatever bytes a payload holds, a publish is refused or every byte of its payload
    /// reaches the backup, also when sent with telnet's `\r\n`.
    #[test]
    fn every_byte_of_an_accepted_payload_survives_replication(
        payload in "[^\n]{0,20}",
        crlf in any::<bool>(),
    ) {
        let ending = if crlf { "\r\n" } else { "\n" };
        let sent = format!("PUBLISH|t|{payload}{ending}");
        let received = lines_of(sent.as_bytes(), 1000);
        let Ok(Request::Publish { topic, payload: accepted }) = Request::parse(&received[0]) else {
            return Ok(());
        };
        // The line ending is `\n` and a `\r` before it, so a bare `\n` can take one `\r`.
        let one_cr_taken = !crlf && payload.strip_suffix('\r') == Some(accepted.as_str());
        prop_assert!(accepted == payload || one_cr_taken);
        let message = Message {
            id: MsgId { publisher: 1, seq: 1 },
            topic,
            payload: accepted.clone(),
        };
        let replica = request_line(&Request::Replicate { epoch: Epoch::default(), index: 1, message });
        let held = lines_of(&replica, 1000);
        let Ok(Request::Replicate { message, .. }) = Request::parse(&held[0]) else {
            return Err(TestCaseError::fail("the replica does not parse"));
        };
        prop_assert_eq!(message.payload, accepted);
    }

    /// No epoch past the limit is taken from the wire, and counting up never wraps.
    #[test]
    fn no_epoch_past_the_limit_is_accepted(term in any::<u64>(), node in any::<u32>()) {
        let parsed = Request::parse(format!("CLEAR|{term}.{node}|1").as_bytes());
        prop_assert_eq!(parsed.is_ok(), term <= Epoch::MAX_TERM);
        if let Ok(Request::Clear { epoch, .. }) = parsed {
            prop_assert!(epoch.next(1).is_none_or(|next| next > epoch));
        }
    }

    /// A publisher's key never yields an id a broker gives seed-form publishes.
    #[test]
    fn no_key_yields_a_broker_id(key in any::<u64>()) {
        prop_assert!(publisher_id(key) > u64::from(u32::MAX));
    }
}

proptest! {
    #![proptest_config(cases(2_000))]

    /// However the bytes are split into reads, the reader yields the same lines, never
    /// buffers more than the limit, and never panics.
    #[test]
    fn the_line_reader_survives_any_stream(
        data in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r')], 0..2000),
        step in 1usize..64,
        max in 1usize..100,
    ) {
        struct Chunks<'a>(&'a [u8], usize);
        impl std::io::Read for Chunks<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.1.min(out.len()).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut reader = LineReader::new(Chunks(&data, step), max);
        let mut whole = LineReader::new(Chunks(&data, data.len().max(1)), max);
        loop {
            let (a, b) = (reader.read_line(), whole.read_line());
            match (a, b) {
                (Ok(Some(x)), Ok(Some(y))) => {
                    prop_assert!(x.len() <= max);
                    prop_assert_eq!(x, y);
                }
                (Ok(None), Ok(None)) => break,
                (Err(x), Err(y)) => {
                    prop_assert_eq!(x.to_string(), y.to_string());
                    break;
                }
                (x, y) => prop_assert!(false, "split reads differ: {:?} vs {:?}", x.is_ok(), y.is_ok()),
            }
        }
    }
}
