//! The Secret `<name>-http-tokens` with the HTTP file API's bearer tokens: `token`
//! (read-write) and `read-token` (read-only), 32 random bytes each, hex-encoded. Created once
//! and never rewritten (tokens handed out keep working across reconciles and operator
//! restarts); owned by the NasVolume, so it goes with it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::{BuildError, identity, owned_meta};
use crate::crd::NasVolume;

/// Key of the read-write token.
pub const TOKEN_KEY: &str = "token";
/// Key of the read-only token.
pub const READ_TOKEN_KEY: &str = "read-token";
/// Where the dataplane pod mounts the Secret.
pub const MOUNT_PATH: &str = "/etc/zeronas/http";
/// Random bytes per token.
pub const TOKEN_BYTES: usize = 32;

/// Why tokens cannot be generated.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(String);

impl RandomError {
    /// The error with its cause.
    pub fn new(cause: String) -> Self {
        RandomError(cause)
    }
}

/// A fresh token: [`TOKEN_BYTES`] bytes from the operating system's CSPRNG, as lowercase hex.
pub fn new_token() -> Result<String, RandomError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The token Secret holding `token` and `read_token` (the controller creates it only when
/// absent).
pub fn token_secret(nv: &NasVolume, token: &str, read_token: &str) -> Result<Secret, BuildError> {
    let (_, _, names) = identity(nv)?;
    Ok(Secret {
        metadata: owned_meta(nv, &names.token_secret)?,
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (TOKEN_KEY.to_owned(), token.to_owned()),
            (READ_TOKEN_KEY.to_owned(), read_token.to_owned()),
        ])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::basic;

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }

    #[test]
    fn secret_is_owned_and_carries_both_keys() {
        let s = token_secret(&basic(), "rw", "ro").unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("media-http-tokens"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("NasVolume", Some(true))
        );
        let data = s.string_data.unwrap();
        assert_eq!(
            (data["token"].as_str(), data["read-token"].as_str()),
            ("rw", "ro")
        );
    }
}
