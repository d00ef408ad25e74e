//! `serve`'s in-process shortcut: the gateway calls the blob node living in the same process
//! directly instead of through loopback gRPC, so blob bytes are copied once between the socket
//! and the file rather than three times (HTTP, gRPC out, gRPC in). Any other node id (none under
//! `serve`, but the trait allows it) goes over gRPC as in a cluster.

use std::sync::Arc;

use async_trait::async_trait;
use cluster_api::{BlobApi, BlobError, BlobNodeId, BlobNodes};

/// [`BlobNodes`] that answers this process's own blob node in-process.
pub struct LocalFirstBlobNodes {
    local_id: BlobNodeId,
    local: Arc<dyn BlobApi>,
    remote: Arc<dyn BlobNodes>,
}

impl LocalFirstBlobNodes {
    pub fn new(
        local_id: BlobNodeId,
        local: Arc<dyn BlobApi>,
        remote: Arc<dyn BlobNodes>,
    ) -> LocalFirstBlobNodes {
        LocalFirstBlobNodes {
            local_id,
            local,
            remote,
        }
    }
}

#[async_trait]
impl BlobNodes for LocalFirstBlobNodes {
    async fn node(&self, id: BlobNodeId) -> Result<Arc<dyn BlobApi>, BlobError> {
        if id == self.local_id {
            return Ok(self.local.clone());
        }
        self.remote.node(id).await
    }
}
