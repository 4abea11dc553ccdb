//! The Identity service: who the driver is, what it offers, and whether it is ready.

use std::collections::HashMap;

use kube::Client;
use tonic::{Request, Response, Status};

use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{Service, Type};
use crate::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use crate::volume::DRIVER_NAME;

/// Identity in either mode. The controller is ready when the apiserver answers; the node
/// needs nothing but the kernel.
pub struct IdentityService {
    /// The apiserver the controller depends on (`None` in node mode).
    pub client: Option<Client>,
    /// Whether this process serves the Controller service.
    pub controller: bool,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        // No topology: a share is reached over the network from every node.
        let capabilities = if self.controller {
            vec![PluginCapability {
                r#type: Some(Type::Service(Service {
                    r#type: crate::csi::plugin_capability::service::Type::ControllerService as i32,
                })),
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        if let Some(client) = &self.client {
            client.apiserver_version().await.map_err(|e| {
                Status::failed_precondition(format!("the apiserver does not answer: {e}"))
            })?;
        }
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
