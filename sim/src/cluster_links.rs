//! Raw connections to a cluster's coordinator, for tests that play a client by hand: a
//! certified gRPC channel or `FleetService` client, or a fleet link on either transport
//! (the same [`FleetLink`] the sidecars use).

use crate::cluster::Cluster;
use crate::inproc::Transport;
use anyhow::{Context, Result};
use fedra_client::transport::FleetLink;
use fedra_types::identity::{Identity, Role};
use std::sync::Arc;

impl Cluster {
    /// A raw `FleetService` connection certified as client `id` of `region` (for tests that
    /// play a client by hand).
    ///
    /// # Errors
    /// Invalid id or region, or connection failure.
    pub async fn fleet_as(
        &self,
        id: &str,
        region: &str,
    ) -> Result<fedra_proto::pb::fleet_service_client::FleetServiceClient<tonic::transport::Channel>> {
        let identity = Identity::new(Role::Client, Some(fedra_types::ids::RegionId::new(region)?), id)?;
        self.connect_as(&self.pki().tls(&identity)?)
            .await
            .map(fedra_proto::pb::fleet_service_client::FleetServiceClient::new)
    }

    /// A channel to the coordinator with `tls`.
    ///
    /// # Errors
    /// Connection failure.
    pub async fn connect_as(&self, tls: &fedra_pki::ClientTls) -> Result<tonic::transport::Channel> {
        Ok(tls.endpoint(&self.endpoint())?.connect().await?)
    }

    /// A raw fleet link as client `id` of `region`, over `transport` (tests that play a
    /// client by hand, on either carrier).
    ///
    /// # Errors
    /// Invalid id or region, connection failure, or an in-process link to a coordinator
    /// that runs as a child process.
    pub async fn link_as(&self, transport: Transport, id: &str, region: &str) -> Result<Arc<dyn FleetLink>> {
        match transport {
            Transport::Grpc => {
                let fleet = self.fleet_as(id, region).await?;
                Ok(Arc::new(fedra_client::transport::grpc::GrpcLink::new(fleet)))
            }
            Transport::Inproc => self.switchboard.link(id, region).context("in-process link"),
        }
    }
}
