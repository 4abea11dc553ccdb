//! The control plane: etcd, kube-apiserver and kube-controller-manager on loopback, started
//! and stopped by `scripts/controlplane.sh` (which builds the binaries once when missing).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Context, Error, Result};

/// The apiserver URL the scripts use (loopback only).
pub const API_SERVER: &str = "https://127.0.0.1:16443";

/// A running control plane; stopped (by the PIDs the script recorded) when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    script: PathBuf,
}

impl ControlPlane {
    /// Starts the control plane with its state, PKI and logs in `dir` (created if missing).
    pub fn start(dir: &Path) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/controlplane.sh");
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        let plane = Self {
            dir: dir.to_owned(),
            script,
        };
        let status = Command::new(&plane.script)
            .arg("up")
            .arg(dir)
            .status()
            .context(|| format!("run {}", plane.script.display()))?;
        if !status.success() {
            return Err(Error::Unsupported(format!(
                "controlplane.sh up failed ({status}); logs in {}",
                dir.display()
            )));
        }
        Ok(plane)
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The cluster CA certificate, for kubeconfigs the node agent writes.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// The folder holding state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `lines` lines of each component's log, for failure reports.
    pub fn log_tails(&self, lines: usize) -> String {
        ["kube-apiserver", "kube-controller-manager", "etcd"]
            .iter()
            .map(|name| {
                let path = self.dir.join(format!("{name}.log"));
                format!(
                    "----- {} (last {lines} lines)\n{}",
                    path.display(),
                    tail(&path, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

/// The last `lines` lines of a text file (empty when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
