//! `GET /v2/<name>/referrers/<digest>?artifactType=`: the manifests whose `subject` is `<digest>`,
//! as an OCI image index. Always 200 (the spec forbids a 404 here): an unknown repository or
//! subject simply has no referrers.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cluster_api::MetaError;
use oci_model::media_type::OCI_INDEX;
use oci_model::{Descriptor, Digest, RepositoryName};
use serde::Serialize;

use crate::error::ApiError;
use crate::headers::{set_header, OCI_FILTERS_APPLIED};
use crate::Gateway;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

pub(crate) async fn list(
    gateway: &Gateway,
    repo: RepositoryName,
    subject: Digest,
    artifact_type: Option<String>,
) -> Result<Response, ApiError> {
    let filter = artifact_type.filter(|wanted| !wanted.is_empty());
    let manifests = match gateway
        .meta
        .list_referrers(&repo, &subject, filter.as_deref())
        .await
    {
        Ok(manifests) => manifests,
        Err(MetaError::NameUnknown(_) | MetaError::ManifestUnknown(_)) => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    let index = ReferrerIndex {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
    };
    let body = serde_json::to_vec(&index).map_err(ApiError::internal)?;
    let mut headers = HeaderMap::new();
    set_header(&mut headers, CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        set_header(&mut headers, OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok((StatusCode::OK, headers, body).into_response())
}
