//! Shared-secret authentication: a mutual challenge–response with random nonces and
//! HMAC-SHA256 (RustCrypto's `hmac` and `sha2`), so the secret itself never crosses the wire.
//!
//! ```text
//! dialer   → HELLO|<kind>|<dialer nonce>
//! listener → CHALLENGE|<listener nonce>|<listener proof>
//! dialer   → PROOF|<dialer proof>            (after checking the listener's proof)
//! listener → WELCOME                         (or ERR|authentication failed, and it hangs up)
//! ```
//!
//! A proof is `HMAC-SHA256(secret, "<side>|<kind>|<dialer nonce>|<listener nonce>")` in hex,
//! where side is `listener` or `dialer`: each side proves it knows the secret for this pair of
//! fresh nonces, and neither proof can be replayed or reflected. `kind` is `peer` (the
//! broker-to-broker secret, `--secret`) or `client` (`--client-secret`). The wire is not
//! encrypted: the secret protects who may act, not what can be read.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::protocol::AuthKind;

/// A shared secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret; `None` for an empty one.
    pub fn new(secret: &str) -> Option<Secret> {
        (!secret.is_empty()).then(|| Secret(secret.into()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which end of the handshake computes a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The side that accepted the connection.
    Listener,
    /// The side that dialled.
    Dialer,
}

/// A fresh random nonce: 128 bits in hex.
pub fn nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn mac(secret: &Secret, side: Side, kind: AuthKind, dialer: &str, listener: &str) -> Hmac<Sha256> {
    let side = match side {
        Side::Listener => "listener",
        Side::Dialer => "dialer",
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{side}|{}|{dialer}|{listener}", kind.as_str()).as_bytes());
    mac
}

/// The proof `side` sends for this pair of nonces, in hex.
pub fn proof(secret: &Secret, side: Side, kind: AuthKind, dialer: &str, listener: &str) -> String {
    let bytes = mac(secret, side, kind, dialer, listener)
        .finalize()
        .into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks, in constant time, a proof `side` sent.
pub fn verify(
    secret: &Secret,
    side: Side,
    kind: AuthKind,
    nonces: (&str, &str),
    proof_hex: &str,
) -> bool {
    let mac = mac(secret, side, kind, nonces.0, nonces.1);
    unhex(proof_hex).is_some_and(|bytes| mac.verify_slice(&bytes).is_ok())
}

/// The bytes `s` spells in hex; `None` if it does not (an odd length leaves a last digit
/// without its pair, and `get` refuses it).
fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The listener's side of the handshake on one connection: the secret and the nonces of the
/// `HELLO` it answered, until the dialer's `PROOF` is checked against them.
#[derive(Debug, Default)]
pub struct Listener {
    hello: Option<(AuthKind, Secret, String, String)>,
}

impl Listener {
    /// `HELLO|<kind>|<theirs>`: our nonce and our proof for `CHALLENGE`, or `Err` with the
    /// `ERR`'s reason when no secret of that kind is set here.
    pub fn hello(
        &mut self,
        kind: AuthKind,
        theirs: String,
        secret: Option<&Secret>,
    ) -> std::result::Result<(String, String), String> {
        let secret = secret.ok_or_else(|| format!("no {} secret is set here", kind.as_str()))?;
        let ours = nonce();
        let proof = proof(secret, Side::Listener, kind, &theirs, &ours);
        self.hello = Some((kind, secret.clone(), theirs, ours.clone()));
        Ok((ours, proof))
    }

    /// `PROOF|<proof>`: the kind the dialer proved, or `None` (no `HELLO` before it, or a
    /// wrong proof).
    pub fn proof(&mut self, proof: &str) -> Option<AuthKind> {
        let (kind, secret, theirs, ours) = self.hello.take()?;
        verify(&secret, Side::Dialer, kind, (&theirs, &ours), proof).then_some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_side_kind_and_nonces() {
        let s = Secret::new("s3cret").unwrap();
        let (d, l) = (nonce(), nonce());
        let p = proof(&s, Side::Dialer, AuthKind::Peer, &d, &l);
        assert_eq!(p.len(), 64);
        assert!(verify(&s, Side::Dialer, AuthKind::Peer, (&d, &l), &p));
        let other = Secret::new("other").unwrap();
        assert!(!verify(&other, Side::Dialer, AuthKind::Peer, (&d, &l), &p));
        assert!(!verify(&s, Side::Listener, AuthKind::Peer, (&d, &l), &p));
        assert!(!verify(&s, Side::Dialer, AuthKind::Client, (&d, &l), &p));
        assert!(!verify(&s, Side::Dialer, AuthKind::Peer, (&l, &d), &p));
        assert!(!verify(&s, Side::Dialer, AuthKind::Peer, (&d, &l), "zz"));
        assert!(!verify(&s, Side::Dialer, AuthKind::Peer, (&d, &l), &p[1..]));
        assert!(!verify(&s, Side::Dialer, AuthKind::Peer, (&d, &l), "ü"));
    }

    #[test]
    fn a_listener_grants_only_the_proof_of_the_hello_it_answered() {
        let s = Secret::new("s3cret").unwrap();
        let kind = AuthKind::Client;
        let mut listener = Listener::default();
        let no_hello = proof(&s, Side::Dialer, kind, "ab", "cd");
        assert_eq!(listener.proof(&no_hello), None);
        assert_eq!(
            listener.hello(kind, "ab".into(), None),
            Err("no client secret is set here".into())
        );

        let (ours, our_proof) = listener.hello(kind, "ab".into(), Some(&s)).unwrap();
        assert!(verify(&s, Side::Listener, kind, ("ab", &ours), &our_proof));
        let right = proof(&s, Side::Dialer, kind, "ab", &ours);
        assert_eq!(listener.proof("00"), None);
        // A failed PROOF used the HELLO up: the right proof comes too late.
        assert_eq!(listener.proof(&right), None);

        // A proof by another secret than the HELLO's is wrong.
        let other = Secret::new("other").unwrap();
        let (ours, _) = listener.hello(kind, "ab".into(), Some(&s)).unwrap();
        let wrong = proof(&other, Side::Dialer, kind, "ab", &ours);
        assert_eq!(listener.proof(&wrong), None);
        let (ours, _) = listener.hello(kind, "ab".into(), Some(&s)).unwrap();
        let right = proof(&s, Side::Dialer, kind, "ab", &ours);
        assert_eq!(listener.proof(&right), Some(kind));
    }

    #[test]
    fn nonces_are_fresh() {
        assert_ne!(nonce(), nonce());
        assert_eq!(nonce().len(), 32);
    }

    #[test]
    fn secrets_are_not_printed() {
        assert_eq!(format!("{:?}", Secret::new("x")), "Some(Secret(..))");
        assert_eq!(Secret::new(""), None);
    }
}
