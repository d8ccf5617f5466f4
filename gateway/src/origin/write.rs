//! Writes to an origin bucket passed through to the upstream (`write = "through"`): a write
//! is acknowledged when the upstream acknowledged it, bytes streamed as they arrive. What was
//! known of the key here (metadata, pieces) is dropped, so the next read sees the new object.
//! (`write = "back"` keeps writes in the namespace first: see [`super::write_back`].)

use std::sync::Arc;

use super::client::{Upload, WriteMeta};
use super::{Origin, OriginError, pieces};

/// What a node does with writes to an origin bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Passed through to the upstream, acknowledged when it acknowledged.
    #[default]
    Through,
    /// Kept in the swarm's namespace and acknowledged there, uploaded in the background.
    Back,
    /// Read-only: writes are refused (403).
    None,
}

impl std::str::FromStr for WriteMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "through" => Ok(Self::Through),
            "back" => Ok(Self::Back),
            "none" => Ok(Self::None),
            other => Err(format!(
                "origin write mode {other:?} is not \"through\", \"back\" or \"none\""
            )),
        }
    }
}

impl Origin {
    pub async fn put(
        self: &Arc<Self>,
        key: &str,
        body: Upload,
        len: u64,
        w: WriteMeta,
    ) -> Result<String, OriginError> {
        let r = self
            .asked("PutObject", self.client.put(key, body, len, w))
            .await;
        self.written(key, r).await
    }

    pub async fn delete(self: &Arc<Self>, key: &str) -> Result<(), OriginError> {
        let r = self.asked("DeleteObject", self.client.delete(key)).await;
        // Deleting a key that is not there succeeds in S3.
        let r = match r {
            Err(OriginError::NotFound) => Ok(()),
            r => r,
        };
        self.written(key, r).await
    }

    pub async fn create_upload(
        &self,
        key: &str,
        meta: store::ObjectMeta,
    ) -> Result<String, OriginError> {
        let r = self.asked(
            "CreateMultipartUpload",
            self.client.create_upload(key, meta),
        );
        self.counted(r.await)
    }

    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Upload,
        len: u64,
        content_md5: Option<String>,
    ) -> Result<String, OriginError> {
        let part = self
            .client
            .upload_part(key, upload_id, number, body, len, content_md5);
        self.counted(self.asked("UploadPart", part).await)
    }

    pub async fn complete_upload(
        self: &Arc<Self>,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
    ) -> Result<String, OriginError> {
        let done = self.client.complete_upload(key, upload_id, parts);
        let r = self.asked("CompleteMultipartUpload", done).await;
        self.written(key, r).await
    }

    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), OriginError> {
        let abort = self.client.abort_upload(key, upload_id);
        self.counted(self.asked("AbortMultipartUpload", abort).await)
    }

    fn counted<T>(&self, r: Result<T, OriginError>) -> Result<T, OriginError> {
        if let Err(e) = &r {
            self.metrics.origin_error(&self.spec.bucket, e);
        }
        r
    }

    /// After a write to `key` (whatever its outcome: a failed write may still have landed),
    /// forgets its metadata and drops its pieces here.
    async fn written<T>(&self, key: &str, r: Result<T, OriginError>) -> Result<T, OriginError> {
        self.forget_local(key).await;
        self.counted(r)
    }

    /// Forgets the metadata and drops the pieces this node keeps of `key`: a write replaced
    /// what they describe.
    pub async fn forget_local(&self, key: &str) {
        self.catalog.forget(key);
        let object = pieces::object_id(&self.spec, key);
        let store = self.store.clone();
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || store.drop_pieces(object, None)).await
        {
            tracing::warn!(key, error = %e, "dropping a rewritten object's pieces failed");
        }
    }
}
