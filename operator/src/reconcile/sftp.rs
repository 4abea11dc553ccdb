//! The SFTP export's objects: the Secret `<name>-sftp-host-key` with the dataplane's SSH host
//! key (ed25519, OpenSSH format), generated once and never rewritten so clients'
//! `known_hosts` stay valid across restarts and reschedules, and owned by the NasVolume;
//! and where the pod mounts it and the user's authorized keys Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use ssh_key::private::{Ed25519Keypair, PrivateKey};

use super::secret::RandomError;
use super::{BuildError, identity, owned_meta};
use crate::crd::{NasVolume, Protocol};

/// Key of the host key in its Secret.
pub const HOST_KEY_KEY: &str = "ssh_host_ed25519_key";
/// Key of the authorized keys in the user's Secret.
pub const AUTHORIZED_KEYS_KEY: &str = "authorized_keys";
/// Where the pod mounts the host key Secret.
pub const HOST_KEY_MOUNT: &str = "/etc/zeronas/sftp-host";
/// Where the pod mounts the authorized keys Secret.
pub const AUTHORIZED_KEYS_MOUNT: &str = "/etc/zeronas/sftp-keys";

/// Whether the share is served over SFTP.
pub fn serves_sftp(nv: &NasVolume) -> bool {
    nv.spec.protocols.contains(&Protocol::Sftp)
}

/// The user's authorized keys Secret (validation makes it present with `sftp`).
pub fn authorized_keys_secret(nv: &NasVolume) -> Option<&str> {
    nv.spec
        .sftp
        .as_ref()
        .and_then(|s| s.authorized_keys_secret.as_deref())
}

/// Whether the user's Secret holds the authorized keys (in `data` or `stringData`).
pub fn has_authorized_keys(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(AUTHORIZED_KEYS_KEY))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(AUTHORIZED_KEYS_KEY))
}

/// A new ed25519 host key in OpenSSH's private key format, from the operating system's
/// CSPRNG.
pub fn new_host_key(comment: &str) -> Result<String, RandomError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| RandomError::new(e.to_string()))?;
    let pair = Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(pair.into(), comment)
        .map_err(|e| RandomError::new(format!("cannot build the host key: {e}")))?;
    let text = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| RandomError::new(format!("cannot encode the host key: {e}")))?;
    Ok(text.to_string())
}

/// The host key Secret holding `key` (the controller creates it only when absent).
pub fn host_key_secret(nv: &NasVolume, key: &str) -> Result<Secret, BuildError> {
    let (_, _, names) = identity(nv)?;
    Ok(Secret {
        metadata: owned_meta(nv, &names.sftp_host_key_secret)?,
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(HOST_KEY_KEY.to_owned(), key.to_owned())])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::basic;

    #[test]
    fn host_keys_are_openssh_ed25519_and_distinct() {
        let a = new_host_key("team-a/media").unwrap();
        let b = new_host_key("team-a/media").unwrap();
        assert!(
            a.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n"),
            "{a}"
        );
        assert_ne!(a, b);
        let parsed = PrivateKey::from_openssh(&a).unwrap();
        assert_eq!(parsed.algorithm(), ssh_key::Algorithm::Ed25519);
        assert_eq!(parsed.comment().to_string(), "team-a/media");
    }

    /// An SFTP share: every object the operator builds carries the export.
    #[test]
    fn an_sftp_share_gets_its_port_rule_mounts_and_endpoint() {
        use crate::reconcile::deployment::{dataplane_args, deployment};
        use crate::reconcile::network_policy::{network_policy, summary};
        use crate::reconcile::service::service;
        use crate::reconcile::test_support::volume;
        let nv = volume(
            "capacity: 1Gi\nprotocols: [http, sftp]\n\
             sftp: { authorizedKeysSecret: media-users, allowedNamespaces: [partners] }\n",
        );
        assert!(serves_sftp(&nv));
        let args = dataplane_args(&nv).unwrap().join(" ");
        assert!(
            args.contains(
                "--sftp 0.0.0.0:2222 --sftp-host-key /etc/zeronas/sftp-host/ssh_host_ed25519_key \
                 --sftp-authorized-keys /etc/zeronas/sftp-keys/authorized_keys"
            ),
            "{args}"
        );
        let ports: Vec<i32> = service(&nv)
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, vec![8080, 2222, 9090]);
        let policy = summary(&network_policy(&nv, "monitoring").unwrap());
        assert_eq!(policy[&2222], vec!["ns:[partners]"]);
        assert!(!policy.contains_key(&2049));
        let settings = crate::reconcile::Settings {
            dataplane_image: "img".into(),
        };
        let d = deployment(&nv, &settings).unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let secrets: Vec<(String, Option<i32>)> = pod
            .volumes
            .unwrap()
            .iter()
            .filter_map(|v| v.secret.as_ref())
            .map(|s| (s.secret_name.clone().unwrap(), s.default_mode))
            .collect();
        assert!(secrets.contains(&("media-sftp-host-key".into(), Some(0o440))));
        assert!(secrets.contains(&("media-users".into(), Some(0o440))));
        let container = &pod.containers[0];
        let ports: Vec<i32> = container
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert!(ports.contains(&2222));
        // Without sftp: none of it.
        let plain = volume("capacity: 1Gi\n");
        assert!(!dataplane_args(&plain).unwrap().join(" ").contains("--sftp"));
        assert!(!summary(&network_policy(&plain, "m").unwrap()).contains_key(&2222));
    }

    #[test]
    fn a_keys_secret_needs_its_key() {
        let mut secret = Secret::default();
        assert!(!has_authorized_keys(&secret));
        secret.string_data = Some(BTreeMap::from([("other".into(), "x".into())]));
        assert!(!has_authorized_keys(&secret));
        secret.data = Some(BTreeMap::from([(
            AUTHORIZED_KEYS_KEY.into(),
            k8s_openapi::ByteString(b"ssh-ed25519 AAAA".to_vec()),
        )]));
        assert!(has_authorized_keys(&secret));
    }

    #[test]
    fn secret_is_owned_and_holds_the_key() {
        let s = host_key_secret(&basic(), "KEY").unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("media-sftp-host-key"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("NasVolume", Some(true))
        );
        assert_eq!(s.string_data.unwrap()[HOST_KEY_KEY], "KEY");
        assert!(!serves_sftp(&basic()));
    }
}
