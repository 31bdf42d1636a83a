//! Stateless server nonces (RFC 9449 §9): an HMAC of the time step under
//! a server secret, so every instance sharing the secret agrees without a
//! store.

use aws_lc_rs::{constant_time, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long one nonce is current; the previous one is still accepted, so
/// a nonce lives between one and two steps.
pub const NONCE_STEP_SECS: u64 = 60;

pub(crate) struct Nonces {
    key: hmac::Key,
}

impl Nonces {
    pub(crate) fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn at_step(&self, step: u64) -> String {
        let mut msg = Vec::with_capacity(32);
        msg.extend_from_slice(b"portcullis dpop nonce ");
        msg.extend_from_slice(&step.to_be_bytes());
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &msg).as_ref())
    }

    /// The nonce to hand out at `now` (seconds).
    pub(crate) fn current(&self, now: u64) -> String {
        self.at_step(now / NONCE_STEP_SECS)
    }

    /// Whether `nonce` is the current step's (`Some(Fresh::Current)`), the
    /// previous step's (`Some(Fresh::Previous)`: accepted, about to age
    /// out), or neither (`None`).
    pub(crate) fn accepts(&self, nonce: &str, now: u64) -> Option<Fresh> {
        let step = now / NONCE_STEP_SECS;
        let is = |s| {
            constant_time::verify_slices_are_equal(self.at_step(s).as_bytes(), nonce.as_bytes())
                .is_ok()
        };
        if is(step) {
            Some(Fresh::Current)
        } else if step > 0 && is(step - 1) {
            Some(Fresh::Previous)
        } else {
            None
        }
    }
}

/// How fresh an accepted nonce is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fresh {
    /// The current step's.
    Current,
    /// The previous step's: the client gets the current one with the
    /// response, so it never meets a `use_dpop_nonce` while it is active.
    Previous,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_and_previous_step_accepted_older_and_forged_refused() {
        let n = Nonces::new(&[7; 32]);
        let t = 1_700_000_000;
        let nonce = n.current(t);
        assert_eq!(n.accepts(&nonce, t), Some(Fresh::Current));
        assert_eq!(
            n.accepts(&nonce, t + NONCE_STEP_SECS),
            Some(Fresh::Previous)
        );
        assert_eq!(n.accepts(&nonce, t + 2 * NONCE_STEP_SECS), None);
        assert_eq!(
            Nonces::new(&[8; 32]).accepts(&nonce, t),
            None,
            "another secret"
        );
        assert_eq!(n.accepts("", t), None);
        assert_eq!(nonce.len(), 43);
    }
}
