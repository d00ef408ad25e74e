//! [`GrpcBlobNodes`]: resolves blob node ids to clients through the cluster map in meta.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use cluster_api::{BlobApi, BlobError, BlobNodeId, BlobNodes, MetaApi};
use parking_lot::RwLock;

use crate::BlobClient;

type Endpoints = (String, Option<String>);

/// Blob node handles, created on first use from the addresses meta records and cached.
pub struct GrpcBlobNodes {
    meta: Arc<dyn MetaApi>,
    /// By node: the node's (gRPC address, direct URL) when the client was made, and the client.
    clients: RwLock<HashMap<BlobNodeId, (Endpoints, Arc<BlobClient>)>>,
}

impl GrpcBlobNodes {
    pub fn new(meta: Arc<dyn MetaApi>) -> GrpcBlobNodes {
        GrpcBlobNodes {
            meta,
            clients: RwLock::new(HashMap::new()),
        }
    }

    /// Re-reads the cluster map, keeping clients whose address did not change.
    async fn refresh(&self) -> Result<(), BlobError> {
        let nodes = self
            .meta
            .blob_nodes()
            .await
            .map_err(|e| BlobError::Unavailable(format!("cannot read the cluster map: {e}")))?;
        let mut clients = self.clients.write();
        clients.retain(|id, ((addr, url), _)| {
            nodes
                .iter()
                .any(|n| n.id == *id && n.addr == *addr && n.http_url == *url)
        });
        for node in nodes {
            if clients.contains_key(&node.id) {
                continue;
            }
            match BlobClient::connect_lazy(&node.addr) {
                Ok(client) => {
                    let client = client.with_direct_url(node.http_url.clone());
                    clients.insert(node.id, ((node.addr, node.http_url), Arc::new(client)));
                }
                Err(error) => {
                    tracing::warn!(node = node.id, %error, "blob node has an unusable address")
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlobNodes for GrpcBlobNodes {
    async fn node(&self, id: BlobNodeId) -> Result<Arc<dyn BlobApi>, BlobError> {
        if let Some((_, client)) = self.clients.read().get(&id) {
            return Ok(client.clone() as Arc<dyn BlobApi>);
        }
        self.refresh().await?;
        self.clients
            .read()
            .get(&id)
            .map(|(_, client)| client.clone() as Arc<dyn BlobApi>)
            .ok_or_else(|| {
                BlobError::Unavailable(format!("blob node {id} is not in the cluster map"))
            })
    }
}
