//! What this node answers its swarm peers above the swarm layer, carried opaquely by the
//! swarm's service requests (see `swarm::Swarm::serve`): pieces of origin objects it was
//! chosen to fetch, and the multipart uploads whose home it is.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::origin::{Origins, PieceAsk};
use crate::s3::{Gateway, UploadAsk};

/// One request from a peer.
#[derive(Serialize, Deserialize)]
pub(crate) enum PeerAsk {
    Piece(PieceAsk),
    Upload(UploadAsk),
}

impl PeerAsk {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(self).map_err(|e| e.to_string())
    }
}

/// What answers peers' service requests on this node.
pub fn service(origins: Arc<Origins>, gateway: Gateway) -> swarm::Service {
    Arc::new(move |from, body| {
        let (origins, gateway) = (origins.clone(), gateway.clone());
        Box::pin(async move {
            let ask: PeerAsk =
                serde_json::from_slice(&body).map_err(|e| format!("bad peer request: {e}"))?;
            match ask {
                PeerAsk::Piece(ask) => origins.answer(ask).await,
                PeerAsk::Upload(ask) => crate::s3::answer_upload(&gateway, from, ask).await,
            }
        })
    })
}
