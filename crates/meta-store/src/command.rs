//! [`Command`]: the Raft log's payload, one variant per `MetaApi` mutation, and
//! [`CommandResponse`]: its domain outcome, decided inside the state machine.
//!
//! [`AuthState::apply`]: cluster_api::AuthState::apply

use cluster_api::{
    AuthChange, BlobInfo, BlobNodeId, BlobNodeInfo, MetaError, NodeState, PlacementRule,
    ProxyUpstream, PutManifest, ReplicationPolicy, ReplicationRule, RetentionAction, RetentionRule,
    SweepReport, UploadId, UploadSession,
};
use oci_model::{Digest, RepositoryName, Tag};
use serde::{Deserialize, Serialize};

/// A state-machine mutation. Everything it needs (ids, timestamps, node choices) is chosen by the
/// proposer and carried here: applying is deterministic and idempotent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Retired: upload sessions were rows of the state; they are signed tokens now
    /// (`cluster_api::UploadToken`). Still decoded from old logs, and applied as nothing.
    CreateUpload { session: UploadSession },
    /// Retired with `CreateUpload`; applied as nothing.
    DeleteUpload { repo: RepositoryName, id: UploadId },
    /// Sets the key that signs upload tokens, unless one is set already (so concurrent
    /// proposals settle on the first). Proposed once, by the first leader asked for an upload.
    SetUploadKey { key: Vec<u8> },
    /// Records a durable blob and links it into `repo` (pushed at `now_ms`). `upload` is the
    /// token of the session that staged it: `UploadUnknown` unless this state's key signed it for
    /// `repo` after the fence horizon (see `Sweep`); its start time is what the deletion fence is
    /// checked against (no token, or an id of another shape from an old log: not trusted).
    /// A doomed blob comes back; `Retry` when a copy of it was deleted after the upload started.
    CommitBlob {
        repo: RepositoryName,
        blob: BlobInfo,
        upload: Option<UploadId>,
        #[serde(default)]
        now_ms: u64,
    },
    /// Links `digest` into `repo` if it is linked in `from`; answers [`CommandOutput::Mounted`].
    MountBlob {
        repo: RepositoryName,
        digest: Digest,
        from: RepositoryName,
        #[serde(default)]
        now_ms: u64,
    },
    /// Removes the link of `digest` from `repo`, dooming the blob if it was the last;
    /// `BlobUnknown` if not linked, `Denied` while a manifest of `repo` uses it.
    UnlinkBlob {
        repo: RepositoryName,
        digest: Digest,
        #[serde(default)]
        now_ms: u64,
    },
    /// Stores a manifest with its links, tag and referrer entry, after checking that every
    /// referenced blob and child manifest is in the repository (`ManifestBlobUnknown`).
    PutManifest {
        #[serde(with = "put_manifest_wire")]
        put: Box<PutManifest>,
        #[serde(default)]
        now_ms: u64,
    },
    /// A pull-through cache's copy of an upstream manifest, in a repository under a proxy
    /// prefix (else `Invalid`): like [`Command::PutManifest`], except that references not
    /// linked yet are counted as pending and taken up by their link when it comes (see
    /// `refs::link_manifest`).
    PutCachedManifest {
        #[serde(with = "put_manifest_wire")]
        put: Box<PutManifest>,
        now_ms: u64,
    },
    /// Removes manifest `digest` from `repo` with its tags and referrer entry, and whatever lived
    /// only through it (see `refs::unlink_manifest`); `Denied` while an index of `repo` lists it.
    DeleteManifest {
        repo: RepositoryName,
        digest: Digest,
        #[serde(default)]
        now_ms: u64,
    },
    /// Removes one tag; `ManifestUnknown` if absent.
    DeleteTag { repo: RepositoryName, tag: Tag },
    /// Adds or replaces a blob node in the cluster map; bumps the epoch when the node is new or
    /// its record changed. A new node is `Up`; a known one keeps its state.
    RegisterBlobNode(BlobNodeInfo),
    /// Sets a node's placement state, bumping the epoch when it changes; `Invalid` for an unknown
    /// node. With `expected` set, applies only when the current state is `expected` (and is
    /// otherwise a successful no-op): the failure detector's guard against overriding a state an
    /// operator set in the meantime.
    SetBlobNodeState {
        id: BlobNodeId,
        state: NodeState,
        expected: Option<NodeState>,
    },
    /// Removes a node from the cluster map, bumping the epoch; an unknown node is a no-op, so a
    /// retried removal succeeds.
    RemoveBlobNode { id: BlobNodeId },
    /// Replaces the replication policy, bumping the epoch when it changes; `Invalid` for a policy
    /// with no replicas or a write quorum above the replica count.
    SetReplicationPolicy(ReplicationPolicy),
    /// Appends `nodes` (those not yet listed) to the replicas of blob `digest`; `BlobUnknown` when
    /// there is no record.
    AddBlobReplicas {
        digest: Digest,
        nodes: Vec<BlobNodeId>,
    },
    /// Drops `nodes` from the replicas of blob `digest`; `BlobUnknown` when there is no record,
    /// `Invalid` (and nothing changes) when no replica would be left.
    RemoveBlobReplicas {
        digest: Digest,
        nodes: Vec<BlobNodeId>,
    },
    /// One access-control change (see [`AuthState::apply`]); answers
    /// [`CommandOutput::AuthVersion`].
    ChangeAuth(AuthChange),
    /// Sets (or with `None` removes) the quota on `namespace`'s physical bytes. Usage already
    /// over a new quota stays; only growth is refused.
    SetQuota {
        namespace: String,
        bytes: Option<u64>,
    },
    /// Adds or replaces a retention rule (by id); `Invalid` when it does not validate.
    PutRetentionRule(RetentionRule),
    /// Removes a retention rule; `Invalid` if unknown.
    DeleteRetentionRule { id: String },
    /// Applies the actions of a retention pass, each only if what it saw still holds; answers
    /// [`CommandOutput::Retained`] with how many were applied.
    ApplyRetention {
        actions: Vec<RetentionAction>,
        #[serde(default)]
        now_ms: u64,
    },
    /// `node` purged its copies of `blobs` (digest, generation) after their deletion was
    /// confirmed: it is no longer listed as holding them.
    BlobsPurged {
        node: BlobNodeId,
        blobs: Vec<(Digest, u64)>,
    },
    /// fsck found copies on `node` that meta does not know: each (digest, size) with no live
    /// record is doomed (or added to its doomed copies), so the node deletes it through the usual
    /// confirmation; one that is live again is left alone. Answers [`CommandOutput::Retained`]
    /// with how many were doomed.
    DiscardOrphans {
        node: BlobNodeId,
        blobs: Vec<(Digest, u64)>,
        now_ms: u64,
    },
    /// One garbage-collection sweep, its cut-offs chosen by the proposing leader: removes blob
    /// links unreferenced since before `links_pushed_before_ms` (dooming blobs that lose their
    /// last link) and drops deletion fences older than `fences_before_ms`, at most `limit` of
    /// each. `fences_before_ms` becomes the fence horizon: an upload token started before it can
    /// no longer be checked against the fences it dropped, so it never commits. Answers
    /// [`CommandOutput::Swept`].
    Sweep {
        now_ms: u64,
        links_pushed_before_ms: u64,
        fences_before_ms: u64,
        limit: u32,
    },
    /// `node` asks to delete its copies of doomed blobs (digest, generation); answers
    /// [`CommandOutput::Confirmed`] (see `refs::confirm_deletion`).
    ConfirmBlobDeletions {
        node: BlobNodeId,
        blobs: Vec<(Digest, u64)>,
        now_ms: u64,
    },
    /// Adds or replaces a placement rule (by id), bumping the epoch when the rules change;
    /// `Invalid` when it does not validate.
    PutPlacementRule(PlacementRule),
    /// Removes a placement rule, bumping the epoch; `Invalid` if unknown.
    DeletePlacementRule { id: String },
    /// The cached manifests `entries` were pulled at `now_ms` (their idle TTL restarts); an
    /// entry that is not a cached manifest is ignored.
    TouchCached {
        entries: Vec<(RepositoryName, Digest)>,
        now_ms: u64,
    },
    /// Removes the cached manifests `entries` (repository, digest, last pull the plan saw) that
    /// were not pulled since, are listed by no index of their repository and carry no immutable
    /// tag, with their tags and what lived only through them; their blobs are then collected
    /// like any unreferenced link. Answers [`CommandOutput::Retained`] with how many went.
    EvictCached {
        entries: Vec<(RepositoryName, Digest, u64)>,
        now_ms: u64,
    },
    /// Adds or replaces a proxy upstream (by id); `Invalid` when it does not validate or its
    /// prefix overlaps another's.
    PutProxy(ProxyUpstream),
    /// Removes a proxy upstream; `Invalid` if unknown. What it cached stays.
    DeleteProxy { id: String },
    /// Adds or replaces a replication rule (by id); `Invalid` when it does not validate.
    PutReplicationRule(ReplicationRule),
    /// Removes a replication rule (and its status); `Invalid` if unknown.
    DeleteReplicationRule { id: String },
    /// Records a replication rule's pass; dropped when the rule no longer exists.
    RecordReplication(cluster_api::ReplicationStatus),
    /// `rule` copied `repo` as of backlog sequence `seq`: off the backlog unless changed since.
    ReplicationDone {
        rule: String,
        repo: RepositoryName,
        seq: u64,
    },
}

/// What a successful command produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandOutput {
    Done,
    /// The answer of [`Command::MountBlob`]: the blob when `from` had it.
    Mounted(Option<BlobInfo>),
    /// The answer of [`Command::ChangeAuth`]: the new access-control state version.
    AuthVersion(u64),
    /// The answer of [`Command::ConfirmBlobDeletions`], one verdict per blob in order.
    Confirmed(Vec<bool>),
    /// The answer of [`Command::Sweep`].
    Swept(SweepReport),
    /// The answer of [`Command::ApplyRetention`].
    Retained(u64),
}

/// The outcome of applying one log entry. Blank and membership entries answer `Ok(Done)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(pub Result<CommandOutput, MetaError>);

impl CommandResponse {
    pub fn done() -> CommandResponse {
        CommandResponse(Ok(CommandOutput::Done))
    }

    pub fn into_result(self) -> Result<CommandOutput, MetaError> {
        self.0
    }
}

impl From<Result<CommandOutput, MetaError>> for CommandResponse {
    fn from(result: Result<CommandOutput, MetaError>) -> Self {
        CommandResponse(result)
    }
}

/// `PutManifest` on the wire: the same fields, with the manifest bytes as text.
mod put_manifest_wire {
    use cluster_api::PutManifest;
    use oci_model::{Descriptor, Digest, RepositoryName, Tag};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct WireRef<'a> {
        repo: &'a RepositoryName,
        digest: &'a Digest,
        media_type: &'a str,
        #[serde(with = "crate::command::text_bytes")]
        bytes: &'a [u8],
        tag: &'a Option<Tag>,
        blobs: &'a [Digest],
        manifests: &'a [Digest],
        subject: &'a Option<Digest>,
        referrer: &'a Option<Descriptor>,
    }

    #[derive(Deserialize)]
    struct Wire {
        repo: RepositoryName,
        digest: Digest,
        media_type: String,
        #[serde(with = "crate::command::text_bytes")]
        bytes: Vec<u8>,
        tag: Option<Tag>,
        blobs: Vec<Digest>,
        manifests: Vec<Digest>,
        subject: Option<Digest>,
        referrer: Option<Descriptor>,
    }

    pub(crate) fn serialize<S, P>(put: &P, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        P: AsRef<PutManifest>,
    {
        let put = put.as_ref();
        WireRef {
            repo: &put.repo,
            digest: &put.digest,
            media_type: &put.media_type,
            bytes: &put.bytes,
            tag: &put.tag,
            blobs: &put.blobs,
            manifests: &put.manifests,
            subject: &put.subject,
            referrer: &put.referrer,
        }
        .serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Box<PutManifest>, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        Ok(Box::new(PutManifest {
            repo: wire.repo,
            digest: wire.digest,
            media_type: wire.media_type,
            bytes: wire.bytes,
            tag: wire.tag,
            blobs: wire.blobs,
            manifests: wire.manifests,
            subject: wire.subject,
            referrer: wire.referrer,
        }))
    }
}

/// Bytes that are almost always UTF-8 (manifests are JSON) as a JSON string, so a 4 MiB manifest
/// stays about 4 MiB in the log instead of becoming a number array. Anything else falls back to
/// `{"hex": "..."}`, which keeps the encoding total.
pub(crate) mod text_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    #[serde(untagged)]
    enum Out<'a> {
        Text(&'a str),
        Hex { hex: String },
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum In {
        Text(String),
        Hex { hex: String },
    }

    pub(crate) fn serialize<S, B>(bytes: B, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        B: AsRef<[u8]>,
    {
        let bytes = bytes.as_ref();
        match std::str::from_utf8(bytes) {
            Ok(text) => Out::Text(text).serialize(serializer),
            Err(_) => Out::Hex {
                hex: hex::encode(bytes),
            }
            .serialize(serializer),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        match In::deserialize(deserializer)? {
            In::Text(text) => Ok(text.into_bytes()),
            In::Hex { hex } => hex::decode(hex).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(bytes: Vec<u8>) -> Command {
        let repo = RepositoryName::parse("a/b").expect("valid name");
        Command::PutManifest {
            put: Box::new(PutManifest {
                repo,
                digest: Digest::sha256_of(&bytes),
                media_type: oci_model::media_type::OCI_MANIFEST.to_owned(),
                bytes,
                tag: Some(Tag::parse("v1").expect("valid tag")),
                blobs: vec![Digest::sha256_of(b"layer")],
                manifests: vec![],
                subject: None,
                referrer: None,
            }),
            now_ms: 1,
        }
    }

    #[test]
    fn manifest_bytes_travel_as_text() {
        let command = put(br#"{"schemaVersion":2}"#.to_vec());
        let json = serde_json::to_string(&command).expect("encodes");
        assert!(
            json.contains(r#""bytes":"{\"schemaVersion\":2}""#),
            "{json}"
        );
        let back: Command = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, command);
    }

    #[test]
    fn non_utf8_bytes_round_trip_as_hex() {
        let command = put(vec![0xff, 0x00, 0x80]);
        let json = serde_json::to_string(&command).expect("encodes");
        assert!(json.contains(r#""hex":"ff0080""#), "{json}");
        let back: Command = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, command);
    }

    #[test]
    fn responses_round_trip() {
        let response =
            CommandResponse(Err(MetaError::ManifestBlobUnknown(Digest::sha256_of(b"x"))));
        let json = serde_json::to_vec(&response).expect("encodes");
        let back: CommandResponse = serde_json::from_slice(&json).expect("decodes");
        assert_eq!(back, response);
    }
}
