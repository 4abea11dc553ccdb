//! Who may log in over SFTP: an OpenSSH `authorized_keys` file (what `ssh-keygen` writes
//! in `id_ed25519.pub` works as is), each key with the identity its logins act as.
//!
//! A line is `[options] key-type base64 [comment]`. The options are comma-separated:
//! `uid=N` and `gid=N` (the identity in posix mode; default `--anon-id`), `groups=N:M`
//! (supplementary groups) and `read-only` (the key may not change anything). OpenSSH's
//! restrictions (`restrict`, `no-pty`, `no-port-forwarding`, `no-agent-forwarding`,
//! `no-X11-forwarding`, `no-user-rc`) are accepted and change nothing, since the server
//! offers none of those things. Any other option is an error naming its line, so a typo
//! never grants more than was meant.
//!
//! The file is re-read when it changes (checked at most once a second, on a login), so a
//! key added to or removed from the Secret takes effect without a restart; a file that
//! cannot be read or parsed any more keeps the keys last read, and says why in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use russh::keys::PublicKey;
use russh::keys::ssh_key::public::KeyData;

use crate::reload::ChangeCheck;

/// How often the file is checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Most keys in one file.
pub const MAX_KEYS: usize = 4096;
/// Most supplementary groups of one key.
pub const MAX_GROUPS: usize = 64;

/// The identity and rights one key logs in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// uid in posix mode.
    pub uid: u32,
    /// Primary gid in posix mode.
    pub gid: u32,
    /// Supplementary gids in posix mode.
    pub groups: Vec<u32>,
    /// The key may only read.
    pub read_only: bool,
    /// The key's comment (for the log), or its algorithm.
    pub label: String,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// It cannot be read.
    #[error("cannot read the SFTP authorized keys file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a key.
    #[error("{path} line {line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// More keys than [`MAX_KEYS`].
    #[error("{path} holds more than {MAX_KEYS} keys")]
    TooMany {
        /// The file.
        path: PathBuf,
    },
}

/// Parses one line's options and key (`Ok(None)`: blank or a comment).
pub fn parse_line(line: &str, default_id: u32) -> Result<Option<(KeyData, Principal)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (options, key_text) = if starts_with_key_type(line) {
        ("", line)
    } else {
        split_options(line)
    };
    let key = PublicKey::from_openssh(key_text).map_err(|e| format!("not a public key: {e}"))?;
    let label = if key.comment().is_empty() {
        key.algorithm().to_string()
    } else {
        key.comment().to_string()
    };
    let mut principal = Principal {
        uid: default_id,
        gid: default_id,
        groups: Vec::new(),
        read_only: false,
        label,
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let (name, value) = option.split_once('=').unwrap_or((option, ""));
        let number = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{name}={v:?} is not a number"))
        };
        match name.to_ascii_lowercase().as_str() {
            "uid" => principal.uid = number(value)?,
            "gid" => principal.gid = number(value)?,
            "groups" => {
                principal.groups = value
                    .split(':')
                    .filter(|g| !g.is_empty())
                    .map(number)
                    .collect::<Result<_, _>>()?;
                if principal.groups.len() > MAX_GROUPS {
                    return Err(format!("groups= lists more than {MAX_GROUPS} groups"));
                }
            }
            "read-only" => principal.read_only = true,
            "restrict"
            | "no-pty"
            | "no-port-forwarding"
            | "no-agent-forwarding"
            | "no-x11-forwarding"
            | "no-user-rc" => {}
            _ => {
                return Err(format!(
                    "unknown option {name:?} (uid=, gid=, groups=, read-only, or OpenSSH's restrictions)"
                ));
            }
        }
    }
    Ok(Some((key.key_data().clone(), principal)))
}

fn starts_with_key_type(line: &str) -> bool {
    let first = line.split_whitespace().next().unwrap_or("");
    first.starts_with("ssh-") || first.starts_with("ecdsa-") || first.starts_with("sk-")
}

/// Splits `options key...` at the first space outside double quotes.
fn split_options(line: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&line[..i], line[i..].trim_start()),
            _ => {}
        }
    }
    (line, "")
}

/// Parses a whole file's text.
pub fn parse_file(
    path: &Path,
    text: &str,
    default_id: u32,
) -> Result<Vec<(KeyData, Principal)>, KeysError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let parsed = parse_line(line, default_id).map_err(|message| KeysError::Line {
            path: path.to_owned(),
            line: i + 1,
            message,
        })?;
        if let Some(entry) = parsed {
            if keys.len() == MAX_KEYS {
                return Err(KeysError::TooMany {
                    path: path.to_owned(),
                });
            }
            keys.push(entry);
        }
    }
    Ok(keys)
}

fn read(path: &Path, default_id: u32) -> Result<Vec<(KeyData, Principal)>, KeysError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(path, &text, default_id)
}

/// The authorized keys file and the keys last read from it.
#[derive(Debug)]
pub struct AuthorizedKeys {
    path: PathBuf,
    default_id: u32,
    current: RwLock<Arc<Vec<(KeyData, Principal)>>>,
    reload: Mutex<ChangeCheck<1>>,
}

impl AuthorizedKeys {
    /// Reads the file; fails when it cannot be read or a line is not a key, so a bad mount
    /// stops start-up. An empty file is allowed (nobody may log in until a key is added).
    pub fn load(path: PathBuf, default_id: u32) -> Result<Self, KeysError> {
        let check = ChangeCheck::new([Some(path.as_path())], RELOAD_CHECK);
        let keys = read(&path, default_id)?;
        if keys.is_empty() {
            tracing::warn!(path = %path.display(), "the SFTP authorized keys file holds no key: every login is refused");
        }
        Ok(Self {
            path,
            default_id,
            current: RwLock::new(Arc::new(keys)),
            reload: Mutex::new(check),
        })
    }

    /// The principal of `key`, if it is authorized (re-reading a changed file first).
    pub fn find(&self, key: &KeyData) -> Option<Principal> {
        self.reload_if_changed();
        let keys = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        keys.iter().find(|(k, _)| k == key).map(|(_, p)| p.clone())
    }

    /// Number of keys in force.
    pub fn len(&self) -> usize {
        self.current.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is in force.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reload_if_changed(&self) {
        let Ok(mut reload) = self.reload.try_lock() else {
            return;
        };
        if !reload.due([Some(self.path.as_path())]) {
            return;
        }
        match read(&self.path, self.default_id) {
            Ok(keys) => {
                let count = keys.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                tracing::info!(keys = count, "SFTP authorized keys changed: reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "SFTP authorized keys changed but cannot be used; keeping the previous keys");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn parses_plain_keys_and_options() {
        let (_, p) = parse_line(&format!("{ED} alice@laptop"), 65534)
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.uid, p.gid, p.read_only, p.label.as_str()),
            (65534, 65534, false, "alice@laptop")
        );
        let (_, p) = parse_line(
            &format!("uid=1000,gid=100,groups=5:6,read-only,restrict {ED} bob"),
            65534,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (p.uid, p.gid, p.groups, p.read_only),
            (1000, 100, vec![5, 6], true)
        );
        assert_eq!(parse_line("  # comment", 0), Ok(None));
        assert_eq!(parse_line("", 0), Ok(None));
        assert!(
            parse_line(&format!("uid=x {ED}"), 0)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            parse_line(&format!("command=\"ls -l\" {ED}"), 0)
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(parse_line("ssh-ed25519 AAAAnotbase64!", 0).is_err());
        let err = parse_file(Path::new("k"), &format!("{ED}\nbogus line\n"), 0).unwrap_err();
        assert!(err.to_string().contains("k line 2"), "{err}");
    }

    #[test]
    fn reloads_a_changed_file_and_keeps_keys_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("uid=7 {ED} a\n")).unwrap();
        let keys = AuthorizedKeys::load(path.clone(), 65534).unwrap();
        let key = PublicKey::from_openssh(ED).unwrap().key_data().clone();
        assert_eq!(keys.find(&key).map(|p| p.uid), Some(7));
        std::fs::write(&path, format!("uid=8 {ED} a b c\n")).unwrap();
        keys.reload.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(keys.find(&key).map(|p| p.uid), Some(8));
        std::fs::write(&path, "garbage garbage\n").unwrap();
        keys.reload.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(
            keys.find(&key).map(|p| p.uid),
            Some(8),
            "a bad file keeps the old keys"
        );
        std::fs::write(&path, "").unwrap();
        keys.reload.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(keys.find(&key), None, "an emptied file revokes");
    }
}
