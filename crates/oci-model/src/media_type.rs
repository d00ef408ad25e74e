//! Media types Wharf recognises for manifests.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Manifest media types a PUT may carry.
pub const MANIFEST_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// True for the two index-like types (their descriptors name manifests, not blobs).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// True for a manifest media type Wharf stores.
pub fn is_manifest(media_type: &str) -> bool {
    MANIFEST_TYPES.contains(&media_type)
}

/// The bare media type of a `Content-Type` value: parameters dropped, whitespace trimmed.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// True when an `Accept` header value admits `media_type`. An absent header, `*/*` or
/// `application/*` admit everything.
pub fn accepts(accept_values: &[&str], media_type: &str) -> bool {
    if accept_values.is_empty() {
        return true;
    }
    accept_values
        .iter()
        .flat_map(|value| value.split(','))
        .map(essence)
        .any(|item| item == media_type || item == "*/*" || item == "application/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_types_are_the_two_lists_and_manifests_the_four() {
        for media_type in MANIFEST_TYPES {
            assert!(is_manifest(media_type));
            let listing = media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST;
            assert_eq!(is_index(media_type), listing, "{media_type}");
        }
        assert!(!is_index(OCI_IMAGE_CONFIG) && !is_manifest(OCI_IMAGE_CONFIG));
        assert!(!is_index("") && !is_manifest(""));
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts(&[], OCI_MANIFEST));
        assert!(accepts(
            &["application/vnd.oci.image.manifest.v1+json; q=0.5"],
            OCI_MANIFEST
        ));
        assert!(accepts(&["text/plain, */*"], OCI_INDEX));
        assert!(!accepts(&[DOCKER_MANIFEST], OCI_MANIFEST));
        assert!(accepts(&[DOCKER_MANIFEST, OCI_MANIFEST], OCI_MANIFEST));
    }

    #[test]
    fn essence_strips_parameters() {
        assert_eq!(
            essence(" application/json ; charset=utf-8"),
            "application/json"
        );
    }
}
