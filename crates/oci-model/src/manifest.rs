//! Manifest parsing and validation for OCI image manifests and indexes, Docker schema 2 manifests and
//! manifest lists, and artifacts (`artifactType`, `subject`). Parsing extracts what the registry
//! must check and index: referenced blobs, child manifests, the subject and the artifact type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media_type::{self, is_index, is_manifest};

/// Manifests above this size are refused (distribution-spec: registries SHOULD accept at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, over the 4 MiB limit")]
    TooLarge(usize),
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("media type {0:?} is not a supported manifest type")]
    UnsupportedMediaType(String),
    #[error("manifest mediaType {body:?} does not match Content-Type {header:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("manifest has no media type: set Content-Type or mediaType")]
    MissingMediaType,
    #[error("manifest of type {0} is missing its {1:?} field")]
    MissingField(String, &'static str),
    #[error("manifest field {field:?} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

/// A content descriptor (image-spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// The parts of a manifest the registry reads. Unknown fields are kept in the stored bytes only.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
    manifests: Option<serde_json::Value>,
    subject: Option<serde_json::Value>,
    annotations: Option<serde_json::Value>,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    /// The manifest's media type (from Content-Type, or the body when the header is absent).
    pub media_type: String,
    /// Blobs the manifest references (config and layers), which must exist in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index, which must exist in the repository.
    pub manifests: Vec<Digest>,
    /// The `subject` this manifest refers to, when it is a referrer.
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without one, the config media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// Parses and validates `bytes` sent with `content_type` (a Content-Type header value).
    pub fn parse(
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<ParsedManifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if raw.schema_version.as_ref().and_then(|v| v.as_u64()) != Some(2) {
            return Err(ManifestError::SchemaVersion);
        }
        let media_type = resolve_media_type(content_type, raw.media_type.as_deref(), &raw)?;
        let annotations = parse_annotations(raw.annotations)?;
        let subject = raw
            .subject
            .map(|value| parse_descriptor("subject", value))
            .transpose()?;
        let mut parsed = ParsedManifest {
            media_type: media_type.clone(),
            blobs: Vec::new(),
            manifests: Vec::new(),
            subject,
            artifact_type: raw.artifact_type,
            annotations,
        };
        if is_index(&media_type) {
            let manifests = raw
                .manifests
                .ok_or_else(|| ManifestError::MissingField(media_type.clone(), "manifests"))?;
            parsed.manifests = parse_descriptor_list("manifests", manifests)?
                .into_iter()
                .map(|d| d.digest)
                .collect();
        } else {
            let config = raw
                .config
                .ok_or_else(|| ManifestError::MissingField(media_type.clone(), "config"))?;
            let config = parse_descriptor("config", config)?;
            let layers = raw
                .layers
                .ok_or_else(|| ManifestError::MissingField(media_type.clone(), "layers"))?;
            let layers = parse_descriptor_list("layers", layers)?;
            if parsed.artifact_type.is_none() {
                parsed.artifact_type = Some(config.media_type.clone());
            }
            parsed.blobs.push(config.digest);
            // Foreign (non-distributable) layers live at their `urls`, not in the registry.
            parsed.blobs.extend(
                layers
                    .into_iter()
                    .filter(|layer| layer.urls.as_ref().is_none_or(|urls| urls.is_empty()))
                    .map(|layer| layer.digest),
            );
        }
        Ok(parsed)
    }

    /// The descriptor under which this manifest is listed by the referrers API.
    pub fn referrer_descriptor(&self, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: digest.clone(),
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
            urls: None,
            platform: None,
        }
    }
}

fn resolve_media_type(
    header: Option<&str>,
    body: Option<&str>,
    raw: &RawManifest,
) -> Result<String, ManifestError> {
    let header = header.map(media_type::essence).filter(|h| !h.is_empty());
    let chosen = match (header, body) {
        (Some(header), Some(body)) if header != body => {
            return Err(ManifestError::MediaTypeMismatch {
                header: header.to_owned(),
                body: body.to_owned(),
            })
        }
        (Some(header), _) => header.to_owned(),
        (None, Some(body)) => body.to_owned(),
        (None, None) if raw.manifests.is_some() => media_type::OCI_INDEX.to_owned(),
        (None, None) if raw.config.is_some() => media_type::OCI_MANIFEST.to_owned(),
        (None, None) => return Err(ManifestError::MissingMediaType),
    };
    if !is_manifest(&chosen) {
        return Err(ManifestError::UnsupportedMediaType(chosen));
    }
    Ok(chosen)
}

fn parse_descriptor(
    field: &'static str,
    value: serde_json::Value,
) -> Result<Descriptor, ManifestError> {
    serde_json::from_value(value).map_err(|e| ManifestError::InvalidField {
        field,
        reason: e.to_string(),
    })
}

fn parse_descriptor_list(
    field: &'static str,
    value: serde_json::Value,
) -> Result<Vec<Descriptor>, ManifestError> {
    serde_json::from_value(value).map_err(|e| ManifestError::InvalidField {
        field,
        reason: e.to_string(),
    })
}

fn parse_annotations(
    value: Option<serde_json::Value>,
) -> Result<Option<BTreeMap<String, String>>, ManifestError> {
    value
        .map(|value| {
            serde_json::from_value(value).map_err(|e| ManifestError::InvalidField {
                field: "annotations",
                reason: e.to_string(),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::*;
    use serde_json::json;

    fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
        json!({"mediaType": media_type, "digest": Digest::sha256_of(data).to_string(), "size": data.len()})
    }

    /// An OCI image manifest of the config `{}` and one layer `layer`.
    fn one_layer_image() -> serde_json::Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_IMAGE_CONFIG, b"{}"),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", b"layer")],
        })
    }

    #[test]
    fn image_manifest() {
        let body = one_layer_image();
        let parsed =
            ParsedManifest::parse(Some(OCI_MANIFEST), body.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.media_type, OCI_MANIFEST);
        assert_eq!(
            parsed.blobs,
            vec![Digest::sha256_of(b"{}"), Digest::sha256_of(b"layer")]
        );
        assert_eq!(parsed.artifact_type.as_deref(), Some(OCI_IMAGE_CONFIG));
        assert!(parsed.manifests.is_empty());
    }

    #[test]
    fn index_and_artifact_with_subject() {
        let index = json!({
            "schemaVersion": 2,
            "manifests": [descriptor(OCI_MANIFEST, b"child")],
        });
        let parsed = ParsedManifest::parse(Some(OCI_INDEX), index.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.manifests, vec![Digest::sha256_of(b"child")]);

        let artifact = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [],
            "subject": descriptor(OCI_MANIFEST, b"child"),
            "annotations": {"a": "b"},
        });
        let parsed = ParsedManifest::parse(None, artifact.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.subject.unwrap().digest, Digest::sha256_of(b"child"));
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
    }

    #[test]
    fn rejects_invalid() {
        let ok_config = descriptor(OCI_IMAGE_CONFIG, b"{}");
        let cases: Vec<(Option<&str>, String)> = vec![
            (Some(OCI_MANIFEST), "not json".into()),
            (Some(OCI_MANIFEST), json!({"schemaVersion": 1, "config": ok_config, "layers": []}).to_string()),
            (Some("text/plain"), json!({"schemaVersion": 2, "config": ok_config, "layers": []}).to_string()),
            (Some(OCI_INDEX), json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": ok_config, "layers": []}).to_string()),
            (Some(OCI_MANIFEST), json!({"schemaVersion": 2, "layers": []}).to_string()),
            (Some(OCI_MANIFEST), json!({"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:bad", "size": 1}, "layers": []}).to_string()),
            (Some(OCI_MANIFEST), json!({"schemaVersion": 2, "config": ok_config, "layers": [{"mediaType": "x", "size": -1, "digest": Digest::sha256_of(b"").to_string()}]}).to_string()),
            (Some(OCI_INDEX), json!({"schemaVersion": 2}).to_string()),
        ];
        for (content_type, body) in cases {
            assert!(
                ParsedManifest::parse(content_type, body.as_bytes()).is_err(),
                "{content_type:?} {body} must be rejected"
            );
        }
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(
            ParsedManifest::parse(Some(OCI_MANIFEST), &huge),
            Err(ManifestError::TooLarge(MAX_MANIFEST_BYTES + 1))
        );
    }

    /// The media type comes from the Content-Type and the body's `mediaType`, which must agree
    /// when both are given; with neither, from the body's shape.
    #[test]
    fn the_media_type_from_header_body_or_shape() {
        let image = one_layer_image();
        let bytes = image.to_string();
        assert_eq!(
            ParsedManifest::parse(Some(OCI_MANIFEST), bytes.as_bytes())
                .unwrap()
                .media_type,
            OCI_MANIFEST
        );
        assert!(matches!(
            ParsedManifest::parse(Some(OCI_INDEX), bytes.as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let mut shapeless = image.clone();
        shapeless.as_object_mut().unwrap().remove("mediaType");
        let bytes = shapeless.to_string();
        assert_eq!(
            ParsedManifest::parse(None, bytes.as_bytes())
                .unwrap()
                .media_type,
            OCI_MANIFEST
        );
        let index = json!({"schemaVersion": 2, "manifests": []}).to_string();
        assert_eq!(
            ParsedManifest::parse(None, index.as_bytes())
                .unwrap()
                .media_type,
            OCI_INDEX
        );
        let neither = json!({"schemaVersion": 2}).to_string();
        assert_eq!(
            ParsedManifest::parse(None, neither.as_bytes()),
            Err(ManifestError::MissingMediaType)
        );
    }

    #[test]
    fn annotations_and_an_index_children_are_read() {
        let children = [b"amd64".as_slice(), b"arm64".as_slice()];
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().map(|c| descriptor(OCI_MANIFEST, c)).collect::<Vec<_>>(),
            "annotations": {"org.opencontainers.image.created": "2026-12-07", "a": "b"},
        })
        .to_string();
        let parsed = ParsedManifest::parse(Some(OCI_INDEX), index.as_bytes()).unwrap();
        assert_eq!(
            parsed.manifests,
            children.map(Digest::sha256_of).to_vec(),
            "the index's children, in order"
        );
        let annotations = parsed.annotations.expect("annotations");
        assert_eq!(annotations.len(), 2);
        assert_eq!(annotations["a"], "b");
        assert_eq!(
            annotations["org.opencontainers.image.created"],
            "2026-12-07"
        );
        let bare = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).to_string();
        let parsed = ParsedManifest::parse(None, bare.as_bytes()).unwrap();
        assert_eq!(parsed.annotations, None);
        let numeric = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
            "annotations": {"a": 1}})
        .to_string();
        assert!(matches!(
            ParsedManifest::parse(None, numeric.as_bytes()),
            Err(ManifestError::InvalidField {
                field: "annotations",
                ..
            })
        ));
    }

    /// distribution-spec: a registry SHOULD accept manifests of at least 4 MiB.
    #[test]
    fn a_manifest_of_four_mebibytes_is_accepted() {
        let body = one_layer_image();
        let mut bytes = body.to_string().into_bytes();
        bytes.resize(4 << 20, b' ');
        assert!(ParsedManifest::parse(Some(OCI_MANIFEST), &bytes).is_ok());
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let mut layer = descriptor(
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            b"f",
        );
        layer["urls"] = json!(["https://example.invalid/layer"]);
        let body = json!({"schemaVersion": 2, "config": descriptor(OCI_IMAGE_CONFIG, b"{}"), "layers": [layer]});
        let parsed =
            ParsedManifest::parse(Some(DOCKER_MANIFEST), body.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.blobs, vec![Digest::sha256_of(b"{}")]);
    }
}
