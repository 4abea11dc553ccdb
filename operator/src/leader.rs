//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. The holder renews every `lease / 3`; another replica takes over once
//! a lease has not been renewed for its full duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

/// Lease parameters.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
}

/// Whether `lease` may be taken by `identity` at `now`.
pub fn can_take(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = lease.holder_identity.as_deref();
    if holder.is_none_or(|h| h.is_empty() || h == identity) {
        return true;
    }
    let Some(renewed) = lease.renew_time.as_ref() else {
        return true;
    };
    let seconds = i64::from(lease.lease_duration_seconds.unwrap_or(15));
    renewed
        .0
        .checked_add(SignedDuration::from_secs(seconds))
        .is_ok_and(|expiry| expiry < now)
}

fn spec(config: &LeaseConfig, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.duration.as_secs() as i32),
        acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Tries once to take or renew the lease; `Ok(true)` when this replica holds it.
pub async fn try_acquire(client: &Client, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    match api.get_opt(&config.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(config, None, 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let current = lease.spec.clone().unwrap_or_default();
            if !can_take(&current, &config.identity, Timestamp::now()) {
                return Ok(false);
            }
            let ours = current.holder_identity.as_deref() == Some(config.identity.as_str());
            let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
            let acquired = if ours {
                current.acquire_time.clone()
            } else {
                None
            };
            lease.spec = Some(spec(config, acquired, transitions));
            // resourceVersion is kept: a concurrent taker gets a conflict, not a split brain.
            match api
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this replica holds the lease.
pub async fn acquire(client: &Client, config: &LeaseConfig) {
    let retry = config.duration / 3;
    loop {
        match try_acquire(client, config).await {
            Ok(true) => {
                tracing::info!(lease = %config.name, identity = %config.identity, "became leader");
                return;
            }
            Ok(false) => tracing::debug!(lease = %config.name, "another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
        }
        tokio::time::sleep(retry).await;
    }
}

/// Renews the lease until a renewal fails for longer than the lease lasts; then returns
/// (leadership is lost and the caller must stop reconciling).
pub async fn hold(client: &Client, config: &LeaseConfig) {
    let period = config.duration / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match try_acquire(client, config).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = %config.name, "lease taken by another replica");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease");
                if last_ok.elapsed() >= config.duration {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Option<i64>, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed.map(|s| MicroTime(Timestamp::from_second(s).unwrap())),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn who_may_take_a_lease() {
        let now = Timestamp::from_second(1000).unwrap();
        assert!(can_take(&lease(None, None, 15), "a", now));
        assert!(can_take(&lease(Some("a"), Some(999), 15), "a", now));
        assert!(
            !can_take(&lease(Some("b"), Some(990), 15), "a", now),
            "b's lease is still valid"
        );
        assert!(
            can_take(&lease(Some("b"), Some(980), 15), "a", now),
            "b's lease expired"
        );
        assert!(can_take(&lease(Some(""), Some(999), 15), "a", now));
    }
}
