//! Access control and safe lifecycle: the HTTP token Secret and bearer tokens, the
//! NetworkPolicy, fields the apiserver refuses to change, a foreign object under an owned
//! name (NameConflict, left untouched), deletion that waits for pods using the share, and
//! `deletionPolicy: Retain` keeping the data for a NasVolume of the same name to adopt.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use zeronas_operator::crd::Phase;
use zeronas_operator::reconcile::network_policy::summary;

use super::{NAMESPACE, Step, Suite, VOLUME, eventually, secs};

/// The Ready condition's (status, reason, message) of NasVolume `name`.
async fn ready_condition(s: &Suite, name: &str) -> Option<(String, String, String)> {
    let nv = s.volumes().get_opt(name).await.ok()??;
    let status = nv.status?;
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether an Event with `reason` was recorded for NasVolume `name`.
async fn has_event(s: &Suite, name: &str, reason: &str) -> bool {
    let events: Api<Event> = Api::namespaced(s.client.clone(), NAMESPACE);
    events
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.involved_object.name.as_deref() == Some(name)
                    && e.involved_object.kind.as_deref() == Some("NasVolume")
            })
        })
        .unwrap_or(false)
}

/// The token Secret exists with both tokens and is named in the status; the file API answers
/// 401 without a token, 403 to a write with the read-only token, and serves the read-write
/// token (what every other scenario's uploads and downloads send).
pub async fn http_tokens(s: &mut Suite) -> Step {
    let names = s.names().await?;
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), NAMESPACE);
    let secret = secrets
        .get(&names.token_secret)
        .await
        .map_err(|e| format!("Secret {}: {e}", names.token_secret))?;
    if !super::owned_by_volume(&secret.metadata) {
        return Err("the token Secret is not controlled by the NasVolume".into());
    }
    let (token, read_token) = (s.token("token").await?, s.token("read-token").await?);
    for t in [&token, &read_token] {
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("a token is not 64 hex digits: {} chars", t.len()));
        }
    }
    if token == read_token {
        return Err("the two tokens are equal".into());
    }
    let nv = s.volumes().get(VOLUME).await.map_err(|e| e.to_string())?;
    let named = nv.status.and_then(|st| st.http_token_secret);
    if named.as_deref() != Some(names.token_secret.as_str()) {
        return Err(format!("status.httpTokenSecret is {named:?}"));
    }
    let path = "e2e/payload.bin";
    let cases = [
        ("GET", None, 401),
        ("GET", Some("wrong-token-0000000000000000"), 401),
        ("GET", Some(read_token.as_str()), 200),
        ("PUT", Some(read_token.as_str()), 403),
        ("PUT", None, 401),
        ("GET", Some(token.as_str()), 200),
    ];
    for (method, bearer, expected) in cases {
        let body: &[u8] = if method == "PUT" { b"nope" } else { &[] };
        let status = s.request(method, path, body, bearer).await?.status;
        if status != expected {
            return Err(format!(
                "{method} {path} with {} answered {status}, expected {expected}",
                match bearer {
                    None => "no token",
                    Some(t) if t == token => "the read-write token",
                    Some(t) if t == read_token => "the read-only token",
                    Some(_) => "a wrong token",
                }
            ));
        }
    }
    web_file_browser(s, &token, &read_token).await?;
    s.payload_intact().await
}

/// The dataplane pod serves the web file browser to anyone who reaches the HTTP port, with
/// its security policy; `/v1/shares` tells each token whether it may write; the browser's
/// download cookie reads a file.
async fn web_file_browser(s: &Suite, token: &str, read_token: &str) -> Step {
    let addr = s.share_address().await?;
    let get = |path: String, header: Option<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = header
            .as_ref()
            .map(|(name, value)| vec![(*name, value.as_str())])
            .unwrap_or_default();
        zeronas_e2e::http::request_with(addr, "GET", &path, &headers, &[], Duration::from_secs(30))
            .await
            .map_err(|e| format!("GET {path} at {addr}: {e}"))
    };
    let page = get("/".into(), None).await?;
    let head = page.head.to_ascii_lowercase();
    if page.status != 200
        || !head.contains("content-security-policy: default-src 'none'")
        || !String::from_utf8_lossy(&page.body).contains("/ui/app.js")
    {
        return Err(format!("GET / answered {}: {}", page.status, page.head));
    }
    for (bearer, can_write) in [(token, true), (read_token, false)] {
        let shares = get(
            "/v1/shares".into(),
            Some(("Authorization", format!("Bearer {bearer}"))),
        )
        .await?;
        let body: serde_json::Value = serde_json::from_slice(&shares.body)
            .map_err(|e| format!("GET /v1/shares: {e}: {}", shares.head))?;
        let share = &body["shares"][0];
        if share["name"] != VOLUME || share["can_write"] != can_write {
            return Err(format!("GET /v1/shares answered {body}"));
        }
    }
    let cookie = get(
        format!("/v1/shares/{VOLUME}/files/e2e/payload.bin"),
        Some(("Cookie", format!("zeronas_token={read_token}"))),
    )
    .await?;
    if cookie.status != 200 {
        return Err(format!(
            "a download with the cookie answered {}",
            cookie.status
        ));
    }
    Ok(())
}

/// The NetworkPolicy selects the dataplane pod and admits NFS from every network (no
/// `clients`), HTTP from the volume's namespace, metrics from it and `monitoring`.
pub async fn network_policy(s: &mut Suite) -> Step {
    let names = s.names().await?;
    let policies: Api<NetworkPolicy> = Api::namespaced(s.client.clone(), NAMESPACE);
    let policy = policies
        .get(&names.network_policy)
        .await
        .map_err(|e| format!("NetworkPolicy {}: {e}", names.network_policy))?;
    if !super::owned_by_volume(&policy.metadata) {
        return Err("the NetworkPolicy is not controlled by the NasVolume".into());
    }
    let spec = policy.spec.as_ref().ok_or("no spec")?;
    let selector = spec
        .pod_selector
        .as_ref()
        .and_then(|p| p.match_labels.clone())
        .unwrap_or_default();
    if selector.get("zeronas.io/volume").map(String::as_str) != Some(VOLUME) {
        return Err(format!("pod selector {selector:?}"));
    }
    // The selector picks the running dataplane pod.
    let pods = s.dataplane_pods().await;
    let pod_labels = pods
        .first()
        .and_then(|p| p.metadata.labels.clone())
        .ok_or("no dataplane pod")?;
    if !selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)) {
        return Err(format!(
            "selector {selector:?} misses the pod's labels {pod_labels:?}"
        ));
    }
    let peers = summary(&policy);
    let want = [
        (2049, vec!["ip:0.0.0.0/0", "ip:::/0"]),
        (8080, vec!["ns:[default]"]),
        (9090, vec!["ns:[default,monitoring]"]),
    ];
    for (port, expected) in want {
        if peers
            .get(&port)
            .map(|p| p.iter().map(String::as_str).collect::<Vec<_>>())
            != Some(expected.clone())
        {
            return Err(format!(
                "port {port}: peers {:?}, expected {expected:?}",
                peers.get(&port)
            ));
        }
    }
    if spec.policy_types.as_deref() != Some(&["Ingress".to_owned()][..]) {
        return Err(format!("policyTypes {:?}", spec.policy_types));
    }
    Ok(())
}

/// Changing `storageClassName` or `readOnly` is refused by the apiserver with the CEL
/// message; the NasVolume keeps its spec.
pub async fn immutable_fields(s: &mut Suite) -> Step {
    let cases = [
        (
            r#"{"spec":{"storageClassName":"other"}}"#,
            "storageClassName cannot change after creation",
        ),
        (
            r#"{"spec":{"readOnly":true}}"#,
            "readOnly cannot change after creation",
        ),
    ];
    for (patch, message) in cases {
        match s.patch_volume(patch).await {
            Ok(out) => return Err(format!("{patch} was accepted: {out}")),
            Err(e) if e.contains(message) => {}
            Err(e) => return Err(format!("{patch} refused without {message:?}: {e}")),
        }
    }
    let nv = s.volumes().get(VOLUME).await.map_err(|e| e.to_string())?;
    if nv.spec.read_only {
        return Err("readOnly changed".into());
    }
    Ok(())
}

/// A Service someone else created under the name a new NasVolume needs: the NasVolume is
/// `Ready=False` / `NameConflict` with an Event, the Service is untouched, and nothing else
/// is created for it.
pub async fn name_conflict(s: &mut Suite) -> Step {
    const NAME: &str = "clash";
    let services: Api<Service> = Api::namespaced(s.client.clone(), NAMESPACE);
    let foreign: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": NAME, "labels": { "owner": "someone-else" } },
        "spec": { "ports": [{ "name": "web", "port": 80 }], "selector": { "app": "web" } },
    }))
    .map_err(|e| e.to_string())?;
    let before = services
        .create(&PostParams::default(), &foreign)
        .await
        .map_err(|e| format!("create the foreign Service: {e}"))?;
    let manifest = s.run_dir.join("clash.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: zeronas.io/v1alpha1\nkind: NasVolume\nmetadata:\n  name: {NAME}\nspec:\n  capacity: 1Gi\n"),
    )
    .map_err(|e| e.to_string())?;
    let started = Instant::now();
    s.kubectl(&["apply", "-f", manifest.to_str().unwrap_or_default()])
        .await?;
    let message = eventually(
        "NasVolume clash to be Ready=False with reason NameConflict",
        Duration::from_secs(60),
        || async {
            let (status, reason, message) = ready_condition(s, NAME).await?;
            (status == "False" && reason == "NameConflict").then_some(message)
        },
    )
    .await?;
    s.measure("foreign Service → NameConflict", secs(started.elapsed()));
    if !message.contains("Service default/clash") {
        return Err(format!("the message does not name the Service: {message}"));
    }
    eventually("a NameConflict Event", Duration::from_secs(30), || async {
        has_event(s, NAME, "NameConflict").await.then_some(())
    })
    .await?;
    let after = services.get(NAME).await.map_err(|e| e.to_string())?;
    if after.metadata.resource_version != before.metadata.resource_version
        || after.metadata.owner_references.is_some()
    {
        return Err(format!(
            "the foreign Service was changed: {:?}",
            after.metadata
        ));
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(s.client.clone(), NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), NAMESPACE);
    let created = [
        claims.get_opt("clash-data").await.map(|o| o.is_some()),
        deployments
            .get_opt("clash-dataplane")
            .await
            .map(|o| o.is_some()),
        secrets
            .get_opt("clash-http-tokens")
            .await
            .map(|o| o.is_some()),
    ];
    if created.iter().any(|c| matches!(c, Ok(true))) {
        return Err(format!(
            "objects were created despite the conflict: {created:?}"
        ));
    }
    s.kubectl(&["delete", "nasvolume", NAME, "--timeout=60s"])
        .await?;
    if services
        .get_opt(NAME)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err("deleting the NasVolume removed the foreign Service".into());
    }
    services
        .delete(NAME, &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Deleting the NasVolume while a pod uses its claim waits (phase Deleting, condition
/// `Deleting`/`InUse` naming the pod, an `InUse` Event) and goes on once the pod is gone;
/// with `deletionPolicy: Retain` (the default) the backing claim is released and kept.
pub async fn delete_waits_for_pods(s: &mut Suite) -> Step {
    const POD: &str = "share-user";
    let names = s.names().await?;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), NAMESPACE);
    // An image the node agent cannot run: the pod stays Pending, as a pod about to mount
    // the share does, and counts as a user.
    let user: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": POD },
        "spec": {
            "containers": [{ "name": "app", "image": "example.invalid/app:1" }],
            "volumes": [{ "name": "share", "persistentVolumeClaim": { "claimName": names.consumer_claim } }],
        },
    }))
    .map_err(|e| e.to_string())?;
    pods.create(&PostParams::default(), &user)
        .await
        .map_err(|e| format!("create the consumer pod: {e}"))?;
    let started = Instant::now();
    s.kubectl(&["delete", "nasvolume", VOLUME, "--wait=false"])
        .await?;
    let message = eventually(
        "the Deleting/InUse condition naming the pod",
        Duration::from_secs(60),
        || async {
            let nv = s.volumes().get_opt(VOLUME).await.ok()??;
            let status = nv.status?;
            let c = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Deleting" && c.reason == "InUse")?;
            (status.phase == Some(Phase::Deleting) && c.message.contains(POD))
                .then(|| c.message.clone())
        },
    )
    .await?;
    eventually("an InUse Event", Duration::from_secs(30), || async {
        has_event(s, VOLUME, "InUse").await.then_some(())
    })
    .await?;
    // Still waiting a while later: the share and its data are all there.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(s.client.clone());
    if s.volumes()
        .get_opt(VOLUME)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
        || pvs
            .get_opt(&names.volume)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
    {
        return Err("the NasVolume or its PV went while a pod used the claim".into());
    }
    s.payload_intact().await?;
    s.measure("delete while in use: waiting with", message);
    pods.delete(POD, &DeleteParams::default())
        .await
        .map_err(|e| format!("delete the consumer pod: {e}"))?;
    let gone_at = Instant::now();
    eventually(
        "the NasVolume to go once no pod uses its claim",
        Duration::from_secs(60),
        || async {
            s.volumes()
                .get_opt(VOLUME)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await?;
    s.measure(
        "consumer pod deleted → NasVolume gone",
        secs(gone_at.elapsed()),
    );
    s.measure("delete while in use, in all", secs(started.elapsed()));
    Ok(())
}

/// After a Retain deletion the backing claim survives (no owner, labelled retained); the
/// basic sample applied again adopts it and serves the same bytes.
pub async fn retain_and_adopt(s: &mut Suite) -> Step {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let data_claim = format!("{VOLUME}-data");
    let retained = eventually(
        "the backing claim to be released and labelled retained",
        Duration::from_secs(60),
        || async {
            let c = claims.get_opt(&data_claim).await.ok()??;
            let labels = c.metadata.labels.clone().unwrap_or_default();
            let released = c
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|r| r.is_empty());
            (released
                && labels.get("zeronas.io/retained").map(String::as_str) == Some("true")
                && c.metadata.deletion_timestamp.is_none())
            .then_some(c)
        },
    )
    .await?;
    // Still there after the garbage collector had its chance (the owner is long gone).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = claims
        .get_opt(&data_claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the retained claim was garbage-collected")?;
    if still.metadata.uid != retained.metadata.uid || still.metadata.deletion_timestamp.is_some() {
        return Err("the retained claim was replaced or is being deleted".into());
    }
    // The old NasVolume's other objects go first (garbage collection; the dataplane pod
    // drains): until then a new NasVolume of the name would rightly see foreign objects.
    let services: Api<Service> = Api::namespaced(s.client.clone(), NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), NAMESPACE);
    eventually(
        "garbage collection of the deleted NasVolume's objects and pod",
        Duration::from_secs(120),
        || async {
            let gone = services.get_opt(VOLUME).await.ok()?.is_none()
                && secrets
                    .get_opt(&format!("{VOLUME}-http-tokens"))
                    .await
                    .ok()?
                    .is_none()
                && claims.get_opt(VOLUME).await.ok()?.is_none()
                && s.dataplane_pods().await.is_empty();
            gone.then_some(())
        },
    )
    .await?;
    let started = Instant::now();
    s.kubectl(&["apply", "-f", "crds/samples/basic.yaml"])
        .await?;
    s.wait_phase(Phase::Ready, Duration::from_secs(180)).await?;
    s.measure(
        "re-created NasVolume adopts the retained claim → Ready",
        secs(started.elapsed()),
    );
    let adopted = claims.get(&data_claim).await.map_err(|e| e.to_string())?;
    if adopted.metadata.uid != retained.metadata.uid {
        return Err("a new backing claim was created instead of adopting the retained one".into());
    }
    let new_uid = s.volume_uid().await?;
    if !super::claimed_by(&adopted.metadata, new_uid.as_deref()) {
        return Err(format!(
            "the adopted claim does not name the new NasVolume ({new_uid:?}): {:?}",
            adopted.metadata.annotations
        ));
    }
    if adopted
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("zeronas.io/retained"))
    {
        return Err("the adopted claim still carries the retained label".into());
    }
    eventually("an Adopted Event", Duration::from_secs(30), || async {
        has_event(s, VOLUME, "Adopted").await.then_some(())
    })
    .await?;
    // The bytes uploaded before the deletion, read over HTTP with the new Secret's token.
    s.payload_intact().await
}

/// A foreground delete (what Argo CD sends) garbage-collects every dependent at once; the
/// backing claim is not one (no owner reference), so Retain still keeps it and the data.
/// The sample is applied again afterwards, so later scenarios find the volume Ready.
pub async fn foreground_delete_retains(s: &mut Suite) -> Step {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(s.client.clone(), NAMESPACE);
    let data_claim = format!("{VOLUME}-data");
    let before = claims
        .get(&data_claim)
        .await
        .map_err(|e| e.to_string())?
        .metadata
        .uid;
    let started = Instant::now();
    s.kubectl(&[
        "delete",
        "nasvolume",
        VOLUME,
        "--cascade=foreground",
        "--timeout=90s",
    ])
    .await?;
    s.measure(
        "foreground delete of a Retain NasVolume",
        secs(started.elapsed()),
    );
    let kept = claims
        .get_opt(&data_claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the backing claim was deleted by a foreground delete under Retain")?;
    let retained = kept
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("zeronas.io/retained"))
        .map(String::as_str)
        == Some("true");
    if kept.metadata.uid != before || kept.metadata.deletion_timestamp.is_some() || !retained {
        return Err(format!(
            "the backing claim is not the retained original: uid {:?} (was {before:?}), deleting {}, labels {:?}",
            kept.metadata.uid,
            kept.metadata.deletion_timestamp.is_some(),
            kept.metadata.labels
        ));
    }
    s.kubectl(&["apply", "-f", "crds/samples/basic.yaml"])
        .await?;
    s.wait_phase(Phase::Ready, Duration::from_secs(180)).await?;
    s.payload_intact().await
}
