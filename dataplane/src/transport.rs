//! The transport seam: TCP today, RDMA when a transport for it lands.
//!
//! At start-up the dataplane probes `/sys/class/infiniband` for RDMA devices and decides,
//! from `--rdma auto|disabled|required`, which transport serves the volume. Only TCP is
//! implemented, so with a device present the decision is still TCP, reported with reason
//! `not_implemented`; an RDMA transport plugs in at [`select`] and in the listeners of
//! `server.rs`. `required` fails start-up unless RDMA can really be used.

use std::path::Path;

use clap::ValueEnum;

/// `--rdma`: whether RDMA may, must or must not be used (`spec.dataPath.rdma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RdmaMode {
    /// Use RDMA when a device and a transport exist; TCP otherwise.
    Auto,
    /// Never use RDMA.
    Disabled,
    /// Fail start-up unless RDMA can be used.
    Required,
}

/// Transports the dataplane can serve on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Kernel TCP sockets.
    Tcp,
}

/// What the probe found and what was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportReport {
    /// The transport in use.
    pub transport: Transport,
    /// `available`, `unavailable` or `disabled`.
    pub rdma: &'static str,
    /// Why RDMA is not in use: `no_device`, `disabled`, `not_implemented`.
    pub reason: &'static str,
    /// RDMA device names found.
    pub devices: Vec<String>,
}

impl TransportReport {
    /// `tcp`.
    pub fn transport_label(&self) -> &'static str {
        match self.transport {
            Transport::Tcp => "tcp",
        }
    }
}

/// Lists RDMA devices (entries of `class_dir`, normally `/sys/class/infiniband`).
pub fn rdma_devices(class_dir: &Path) -> Vec<String> {
    let mut devices: Vec<String> = std::fs::read_dir(class_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    devices.sort();
    devices
}

/// Chooses the transport for `mode` given the devices found.
pub fn select(mode: RdmaMode, devices: Vec<String>) -> Result<TransportReport, String> {
    let tcp = |rdma, reason, devices| TransportReport {
        transport: Transport::Tcp,
        rdma,
        reason,
        devices,
    };
    match (mode, devices.is_empty()) {
        (RdmaMode::Disabled, _) => Ok(tcp("disabled", "disabled", devices)),
        (RdmaMode::Auto, true) => Ok(tcp("unavailable", "no_device", devices)),
        (RdmaMode::Auto, false) => Ok(tcp("available", "not_implemented", devices)),
        (RdmaMode::Required, true) => Err(
            "--rdma required, but no RDMA device was found under /sys/class/infiniband; use --rdma auto to fall back to TCP"
                .into(),
        ),
        (RdmaMode::Required, false) => Err(format!(
            "--rdma required: RDMA devices found ({}), but this dataplane has no RDMA transport yet; use --rdma auto",
            devices.join(", ")
        )),
    }
}

/// Probes the real host.
pub fn probe(mode: RdmaMode) -> Result<TransportReport, String> {
    select(mode, rdma_devices(Path::new("/sys/class/infiniband")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let auto = select(RdmaMode::Auto, vec![]).unwrap();
        assert_eq!(
            (auto.transport_label(), auto.rdma, auto.reason),
            ("tcp", "unavailable", "no_device")
        );
        let found = select(RdmaMode::Auto, vec!["mlx5_0".into()]).unwrap();
        assert_eq!((found.rdma, found.reason), ("available", "not_implemented"));
        let off = select(RdmaMode::Disabled, vec!["mlx5_0".into()]).unwrap();
        assert_eq!((off.rdma, off.reason), ("disabled", "disabled"));
        assert!(
            select(RdmaMode::Required, vec![])
                .unwrap_err()
                .contains("no RDMA device")
        );
        assert!(select(RdmaMode::Required, vec!["mlx5_0".into()]).is_err());
    }

    #[test]
    fn devices_are_listed_from_a_class_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(rdma_devices(&dir.path().join("missing")).is_empty());
        std::fs::create_dir(dir.path().join("mlx5_1")).unwrap();
        std::fs::create_dir(dir.path().join("mlx5_0")).unwrap();
        assert_eq!(
            rdma_devices(dir.path()),
            vec!["mlx5_0".to_owned(), "mlx5_1".to_owned()]
        );
    }
}
