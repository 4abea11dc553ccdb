//! The Controller service: volumes are NasVolumes. CreateVolume makes one (or finds the same
//! request's) and waits for the operator to report it Ready; DeleteVolume deletes it (the
//! operator's finalizer removes what it owns); ControllerExpandVolume grows its capacity.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use tonic::{Request, Response, Status};
use zeronas_operator::crd::NasVolume;

use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::rpc::Type as Rpc;
use crate::csi::validate_volume_capabilities_response::Confirmed;
use crate::csi::*;
use crate::volume::{self, Existing, Readiness, RequestError, VolumeId, context};

/// How often CreateVolume looks at a NasVolume it waits for: soon at first (a share is
/// often Ready within a second), then every 2 s, so many waiting calls stay light.
const POLL_FIRST: Duration = Duration::from_millis(250);
const POLL_MAX: Duration = Duration::from_secs(2);
/// Kept back from the caller's deadline, so the answer arrives before it gives up.
const MARGIN: Duration = Duration::from_millis(500);

/// The Controller service.
pub struct ControllerService {
    /// The apiserver, with the driver's ServiceAccount.
    pub client: Client,
    /// Namespace of volumes whose claim's namespace is not passed.
    pub default_namespace: String,
    /// The longest CreateVolume waits for Ready when the caller sets no deadline.
    pub ready_timeout: Duration,
}

fn invalid(e: RequestError) -> Status {
    match e {
        RequestError::Capacity(_) => Status::out_of_range(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// An apiserver error as the gRPC code the sidecars act on: a refused object or a missing
/// permission is final (retrying cannot help), anything else is worth another try.
fn api_error(what: &str, e: kube::Error) -> Status {
    let message = format!("{what}: {e}");
    match &e {
        kube::Error::Api(s) if s.code == 400 || s.code == 422 => Status::invalid_argument(message),
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Status::permission_denied(message),
        kube::Error::Api(s) if s.code == 404 => Status::not_found(message),
        _ => Status::unavailable(message),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn capability(rpc: Rpc) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(controller_service_capability::Type::Rpc(
            controller_service_capability::Rpc { r#type: rpc as i32 },
        )),
    }
}

impl ControllerService {
    fn api(&self, namespace: &str) -> Api<NasVolume> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn get(&self, id: &VolumeId) -> Result<Option<NasVolume>, Status> {
        self.api(&id.namespace)
            .get_opt(&id.name)
            .await
            .map_err(|e| api_error(&format!("reading NasVolume {id}"), e))
    }

    /// A NasVolume this driver made, by volume id; NotFound otherwise.
    async fn ours(&self, volume_id: &str) -> Result<(VolumeId, NasVolume), Status> {
        let not_found = || Status::not_found(format!("volume {volume_id:?} does not exist"));
        let id = VolumeId::parse(volume_id).ok_or_else(not_found)?;
        let nv = self.get(&id).await?.ok_or_else(not_found)?;
        if !volume::provisioned(&nv) || nv.metadata.deletion_timestamp.is_some() {
            return Err(not_found());
        }
        Ok((id, nv))
    }

    /// FAILED_PRECONDITION unless the backing claim's StorageClass allows expansion.
    async fn backing_class_expands(&self, id: &VolumeId, nv: &NasVolume) -> Result<(), Status> {
        let uid = nv.metadata.uid.as_deref().unwrap_or_default();
        let claim_name = zeronas_operator::names::OwnedNames::for_volume(&id.name, uid).data_claim;
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &id.namespace);
        let claim = claims
            .get_opt(&claim_name)
            .await
            .map_err(|e| api_error(&format!("reading claim {claim_name}"), e))?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the backing claim {}/{claim_name} does not exist yet",
                    id.namespace
                ))
            })?;
        let class_name = claim
            .spec
            .and_then(|s| s.storage_class_name)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the backing claim {}/{claim_name} has no storage class to grow with",
                    id.namespace
                ))
            })?;
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        let class = classes
            .get_opt(&class_name)
            .await
            .map_err(|e| api_error(&format!("reading StorageClass {class_name}"), e))?;
        if class.and_then(|c| c.allow_volume_expansion) != Some(true) {
            return Err(Status::failed_precondition(format!(
                "the backing StorageClass {class_name} does not allow volume expansion"
            )));
        }
        Ok(())
    }

    /// Waits until the NasVolume is Ready (or gone, when it was being deleted), or the time
    /// is up; `Ok(None)` means it vanished.
    async fn wait(
        &self,
        id: &VolumeId,
        until: Instant,
    ) -> Result<Option<(NasVolume, Option<String>)>, Status> {
        let mut poll = POLL_FIRST;
        loop {
            let Some(nv) = self.get(id).await? else {
                return Ok(None);
            };
            let last = match volume::readiness(&nv) {
                Readiness::Ready { nfs_server } => return Ok(Some((nv, nfs_server))),
                Readiness::Waiting(message) => message,
                Readiness::Deleting => "a volume of this name is still being deleted".into(),
            };
            let now = Instant::now();
            if now >= until {
                return Err(Status::deadline_exceeded(format!(
                    "NasVolume {id} is not Ready yet ({last}); the call may be repeated"
                )));
            }
            tokio::time::sleep(poll.min(until - now)).await;
            poll = (poll * 2).min(POLL_MAX);
        }
    }
}

/// The response's volume: id, capacity and what NodePublishVolume needs.
fn volume_of(id: &VolumeId, nv: &NasVolume, nfs_server: Option<String>) -> Volume {
    let mut volume_context = HashMap::from([
        (context::NASVOLUME.to_owned(), id.to_string()),
        (context::SHARE.to_owned(), "/".to_owned()),
        (context::READ_ONLY.to_owned(), nv.spec.read_only.to_string()),
    ]);
    if let Some(server) = nfs_server {
        volume_context.insert(context::SERVER.to_owned(), server);
    }
    if let Some(uid) = nv.metadata.uid.as_deref() {
        let service = zeronas_operator::names::OwnedNames::for_volume(&id.name, uid).service;
        volume_context.insert(
            context::SERVICE.to_owned(),
            format!("{service}.{}.svc", id.namespace),
        );
    }
    Volume {
        capacity_bytes: i64::try_from(volume::capacity_of(nv)).unwrap_or(i64::MAX),
        volume_id: id.to_string(),
        volume_context,
        ..Volume::default()
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let started = Instant::now();
        let allowed = crate::deadline::from_metadata(request.metadata())
            .map_or(self.ready_timeout, |d| d.saturating_sub(MARGIN));
        let until = started + allowed;
        let req = request.into_inner();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let writes = volume::check_capabilities(&req.volume_capabilities).map_err(invalid)?;
        if req.volume_content_source.is_some() {
            return Err(Status::invalid_argument(
                "volume content sources (snapshots, clones) are not offered",
            ));
        }
        if !req.mutable_parameters.is_empty() {
            return Err(Status::invalid_argument(
                "mutable parameters (VolumeAttributesClass) are not offered",
            ));
        }
        let parameters: BTreeMap<String, String> = req.parameters.into_iter().collect();
        let capacity = volume::capacity_for(req.capacity_range.as_ref()).map_err(invalid)?;
        let spec = volume::spec_for(&parameters, capacity, writes).map_err(invalid)?;
        let digest = volume::request_digest(&parameters, capacity);
        let id = VolumeId {
            namespace: volume::namespace_for(&parameters, &self.default_namespace),
            name: volume::nasvolume_name(&req.name),
        };
        let api = self.api(&id.namespace);
        loop {
            match self.get(&id).await? {
                None => {
                    let nv = volume::nasvolume(
                        &id,
                        &req.name,
                        &parameters,
                        spec.clone(),
                        digest.clone(),
                    );
                    match api.create(&PostParams::default(), &nv).await {
                        Ok(_) => {
                            tracing::info!(volume = %id, name = %req.name, capacity, "created NasVolume");
                        }
                        // Made meanwhile by a concurrent call: read it and compare.
                        Err(e) if is_conflict(&e) => continue,
                        Err(e) => return Err(api_error(&format!("creating NasVolume {id}"), e)),
                    }
                }
                Some(found) if found.metadata.deletion_timestamp.is_none() => {
                    if let Existing::Different(why) = volume::compare(&found, &req.name, &digest) {
                        return Err(Status::already_exists(format!(
                            "volume {:?} (NasVolume {id}): {why}",
                            req.name
                        )));
                    }
                }
                Some(_) => {}
            }
            // Ready (never while being deleted), or gone: then it was being deleted, and is
            // made anew.
            if let Some((nv, nfs_server)) = self.wait(&id, until).await? {
                tracing::info!(volume = %id, waited_ms = started.elapsed().as_millis() as u64, "volume ready");
                return Ok(Response::new(CreateVolumeResponse {
                    volume: Some(volume_of(&id, &nv, nfs_server)),
                }));
            }
        }
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        // An id this driver never made names nothing: deleting it succeeds (idempotence).
        let Some(id) = VolumeId::parse(&req.volume_id) else {
            return Ok(Response::new(DeleteVolumeResponse {}));
        };
        let Some(nv) = self.get(&id).await? else {
            return Ok(Response::new(DeleteVolumeResponse {}));
        };
        if !volume::provisioned(&nv) {
            // Someone made a NasVolume of this name after ours was deleted: not ours to take.
            tracing::warn!(volume = %id, "not deleting a NasVolume the driver did not make");
            return Ok(Response::new(DeleteVolumeResponse {}));
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: nv.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api(&id.namespace).delete(&id.name, &params).await {
            Ok(_) => tracing::info!(volume = %id, "deleted NasVolume"),
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => return Err(api_error(&format!("deleting NasVolume {id}"), e)),
        }
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no attach step: shares are mounted over the network",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no attach step: shares are mounted over the network",
        ))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities are required"));
        }
        let (_, nv) = self.ours(&req.volume_id).await?;
        let message = match volume::check_capabilities(&req.volume_capabilities) {
            Ok(true) if nv.spec.read_only => {
                Some("the share is read-only; a writer access mode cannot be served".to_owned())
            }
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        Ok(Response::new(match message {
            None => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
            Some(message) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
        }))
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let req = request.into_inner();
        if req.max_entries < 0 {
            return Err(Status::invalid_argument("max_entries must not be negative"));
        }
        // The token is the last id of the previous page: pages stay right when volumes
        // come and go between calls.
        let after = if req.starting_token.is_empty() {
            None
        } else {
            Some(VolumeId::parse(&req.starting_token).ok_or_else(|| {
                Status::aborted(format!(
                    "starting_token {:?} is not one this driver gave",
                    req.starting_token
                ))
            })?)
        };
        let all: Api<NasVolume> = Api::all(self.client.clone());
        let list = all
            .list(&ListParams::default().labels(volume::LABEL_PROVISIONED))
            .await
            .map_err(|e| api_error("listing NasVolumes", e))?;
        let mut volumes: Vec<(VolumeId, NasVolume)> = list
            .items
            .into_iter()
            .filter(|nv| nv.metadata.deletion_timestamp.is_none())
            .filter_map(|nv| {
                let id = VolumeId {
                    namespace: nv.metadata.namespace.clone()?,
                    name: nv.metadata.name.clone()?,
                };
                Some((id, nv))
            })
            .filter(|(id, _)| after.as_ref().is_none_or(|a| id > a))
            .collect();
        volumes.sort_by(|a, b| a.0.cmp(&b.0));
        let limit = if req.max_entries == 0 {
            usize::MAX
        } else {
            req.max_entries as usize
        };
        let next_token = if volumes.len() > limit {
            volumes.truncate(limit);
            volumes
                .last()
                .map(|(id, _)| id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let entries = volumes
            .into_iter()
            .map(|(id, nv)| {
                let server = match volume::readiness(&nv) {
                    Readiness::Ready { nfs_server } => nfs_server,
                    _ => None,
                };
                list_volumes_response::Entry {
                    volume: Some(volume_of(&id, &nv, server)),
                    status: None,
                }
            })
            .collect();
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        // What the backing class reports: CSIStorageCapacity objects of its driver for that
        // class (the largest segment, since a share may land on any node). Unknown: 0.
        // Without the class named, the answer would be some other class's: say unknown.
        let Some(class) = req.parameters.get("storageClassName").cloned() else {
            return Ok(Response::new(GetCapacityResponse {
                available_capacity: 0,
                maximum_volume_size: None,
                minimum_volume_size: None,
            }));
        };
        let capacities: Api<k8s_openapi::api::storage::v1::CSIStorageCapacity> =
            Api::all(self.client.clone());
        let list = capacities
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("listing CSIStorageCapacity", e))?;
        let largest = list
            .items
            .iter()
            .filter(|c| c.storage_class_name == class)
            .filter_map(|c| {
                c.maximum_volume_size
                    .as_ref()
                    .or(c.capacity.as_ref())
                    .and_then(zeronas_operator::quantity::to_units)
            })
            .max()
            .unwrap_or(0);
        let bytes = i64::try_from(largest).unwrap_or(i64::MAX);
        Ok(Response::new(GetCapacityResponse {
            available_capacity: bytes,
            maximum_volume_size: (bytes > 0).then_some(bytes),
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![
                capability(Rpc::CreateDeleteVolume),
                capability(Rpc::ListVolumes),
                capability(Rpc::GetCapacity),
                capability(Rpc::ExpandVolume),
            ],
        }))
    }

    async fn create_snapshot(
        &self,
        _request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not offered"))
    }

    async fn delete_snapshot(
        &self,
        _request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not offered"))
    }

    async fn list_snapshots(
        &self,
        _request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Err(Status::unimplemented("snapshots are not offered"))
    }

    async fn get_snapshot(
        &self,
        _request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        Err(Status::unimplemented("snapshots are not offered"))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let Some(range) = req.capacity_range.as_ref() else {
            return Err(Status::invalid_argument("capacity_range is required"));
        };
        let wanted = volume::capacity_for(Some(range)).map_err(invalid)?;
        let (id, nv) = self.ours(&req.volume_id).await?;
        let current = volume::capacity_of(&nv);
        // Shares never shrink (the NasVolume refuses it): a smaller request is already met.
        let capacity = if wanted > current {
            // The NasVolume's capacity cannot go back down, so a backing class that cannot
            // grow is refused before anything changes (the operator would serve the old
            // size, Degraded, while the claim said the new one).
            self.backing_class_expands(&id, &nv).await?;
            let patch = serde_json::json!({ "spec": { "capacity": volume::quantity(wanted) } });
            self.api(&id.namespace)
                .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(&format!("growing NasVolume {id}"), e))?;
            tracing::info!(volume = %id, from = current, to = wanted, "grew NasVolume");
            wanted
        } else {
            current
        };
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: i64::try_from(capacity).unwrap_or(i64::MAX),
            // The dataplane applies the new quota itself; nothing to do on the nodes.
            node_expansion_required: false,
        }))
    }

    async fn controller_get_volume(
        &self,
        _request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        Err(Status::unimplemented("GET_VOLUME is not advertised"))
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented("MODIFY_VOLUME is not advertised"))
    }
}
