//! Pure OCI domain model: digests, repository names, tags and references, media types, manifest
//! parsing and validation, and the OCI distribution-spec error-code table.
//!
//! This crate performs no I/O and must not depend on any networking, storage or async crate: every
//! other Wharf crate builds on it, and its code is the hot pure path that `benches/` measures.

pub mod challenge;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod range;

pub use digest::{Algorithm, Digest, DigestError, Digester};
pub use error::{ErrorCode, ErrorInfo, OciError};
pub use manifest::{Descriptor, ManifestError, ParsedManifest, MAX_MANIFEST_BYTES};
pub use name::{NameError, Reference, RepositoryName, Tag};
pub use range::{range_request, RangeRequest};
