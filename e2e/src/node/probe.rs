//! Readiness and liveness probes (httpGet and tcpSocket), run the way the kubelet runs them:
//! every `periodSeconds` after `initialDelaySeconds`, flipping after `failureThreshold`
//! failures or `successThreshold` successes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What one probe checks, resolved against the pod IP and the container's named ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// HTTP GET; 200..=399 passes.
    Http {
        /// Where.
        addr: SocketAddr,
        /// Request path.
        path: String,
    },
    /// A TCP connect passes.
    Tcp(SocketAddr),
}

/// A probe with the kubelet's timing settings (defaults as in the Pod API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The check.
    pub check: Check,
    /// Delay before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Consecutive failures that flip the result to failed.
    pub failure_threshold: u32,
    /// Consecutive successes that flip it to passed.
    pub success_threshold: u32,
}

fn port_number(container: &Container, port: &IntOrString) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("probe port {name:?} is not a named container port"))?,
    };
    u16::try_from(number).map_err(|_| format!("probe port {number} is out of range"))
}

/// Resolves `probe` of `container` for a pod at `ip`.
pub fn resolve(container: &Container, probe: &Probe, ip: Ipv4Addr) -> Result<ProbeSpec, String> {
    let check = if let Some(http) = &probe.http_get {
        Check::Http {
            addr: SocketAddr::from((ip, port_number(container, &http.port)?)),
            path: http.path.clone().unwrap_or_else(|| "/".to_owned()),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        Check::Tcp(SocketAddr::from((ip, port_number(container, &tcp.port)?)))
    } else {
        return Err("only httpGet and tcpSocket probes are supported".to_owned());
    };
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Ok(ProbeSpec {
        check,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
    })
}

/// Runs one check: Ok on success, Err with what went wrong.
pub async fn check(spec: &ProbeSpec) -> Result<(), String> {
    match &spec.check {
        Check::Http { addr, path } => {
            let response = crate::http::request(*addr, "GET", path, &[], spec.timeout)
                .await
                .map_err(|e| format!("GET http://{addr}{path}: {e}"))?;
            if (200..400).contains(&response.status) {
                Ok(())
            } else {
                Err(format!(
                    "GET http://{addr}{path}: status {}",
                    response.status
                ))
            }
        }
        Check::Tcp(addr) => {
            tokio::time::timeout(spec.timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connect {addr}: timed out"))?
                .map(drop)
                .map_err(|e| format!("connect {addr}: {e}"))
        }
    }
}

/// Counts consecutive results against the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    passing: bool,
    successes: u32,
    failures: u32,
}

impl Tracker {
    /// A tracker that starts in `passing` (readiness starts failed, liveness passed).
    pub fn new(passing: bool) -> Self {
        Self {
            passing,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one result; returns the (possibly flipped) state.
    pub fn record(&mut self, spec: &ProbeSpec, ok: bool) -> bool {
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= spec.success_threshold {
                self.passing = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= spec.failure_threshold {
                self.passing = false;
            }
        }
        self.passing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};

    fn container() -> Container {
        Container {
            ports: Some(vec![ContainerPort {
                name: Some("metrics".into()),
                container_port: 9090,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_named_ports_and_defaults() {
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("metrics".into()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(1),
            ..Default::default()
        };
        let ip = Ipv4Addr::new(127, 0, 9, 2);
        let spec = resolve(&container(), &probe, ip).unwrap();
        assert_eq!(
            spec.check,
            Check::Http {
                addr: "127.0.9.2:9090".parse().unwrap(),
                path: "/readyz".into()
            }
        );
        assert_eq!(
            (spec.period, spec.failure_threshold, spec.success_threshold),
            (Duration::from_secs(2), 1, 1)
        );
        let mut unknown = probe.clone();
        unknown.http_get.as_mut().unwrap().port = IntOrString::String("nope".into());
        assert!(
            resolve(&container(), &unknown, ip)
                .unwrap_err()
                .contains("nope")
        );
        assert!(resolve(&container(), &Probe::default(), ip).is_err());
    }

    #[test]
    fn thresholds_flip_the_state() {
        let probe = Probe {
            tcp_socket: Some(Default::default()),
            failure_threshold: Some(2),
            success_threshold: Some(1),
            ..Default::default()
        };
        let mut probe = probe;
        probe.tcp_socket.as_mut().unwrap().port = IntOrString::Int(1);
        let spec = resolve(&container(), &probe, Ipv4Addr::LOCALHOST).unwrap();
        let mut t = Tracker::new(true);
        assert!(t.record(&spec, false));
        assert!(!t.record(&spec, false));
        assert!(t.record(&spec, true));
    }

    #[tokio::test]
    async fn checks_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spec = |check| ProbeSpec {
            check,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: 1,
            success_threshold: 1,
        };
        assert!(check(&spec(Check::Tcp(addr))).await.is_ok());
        drop(listener);
        assert!(check(&spec(Check::Tcp(addr))).await.is_err());
    }
}
