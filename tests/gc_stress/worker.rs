//! One client of the load: its random steps (pushes, index pushes, deletes, pulls, `wharf admin
//! gc`), each checked against the worker's model of its repository, and the final deletion.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use oci_model::Digest;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::client::{image_manifest, Repo, Upload};
use crate::common::serve::Serve;
use crate::model::{Blob, RepoModel, Stored, Tally};
use crate::{
    admin_json, CLOCK_SLACK, GRACE_RACE, HEAD_RACE, IMAGE_ATTEMPTS, MAX_LAYER,
    MAX_STEPS_PER_WORKER, OCI_INDEX, OCI_MANIFEST, TAGS, TRAIL_LENGTH, UPLOAD_ATTEMPTS,
    UPLOAD_GRACE,
};

/// One client: owns its repository, and keeps the last operations it began for a failure report.
pub struct Worker {
    pub id: usize,
    pub repo: Repo,
    pub serve: Arc<Serve>,
    pub pool: Arc<Vec<Blob>>,
    pub rng: StdRng,
    pub model: RepoModel,
    pub tally: Tally,
    pub images_made: u64,
    pub trail: VecDeque<String>,
}

impl Worker {
    pub async fn run(mut self, stop_at: Instant) -> Result<Worker, String> {
        for _ in 0..MAX_STEPS_PER_WORKER {
            if Instant::now() >= stop_at {
                break;
            }
            if let Err(error) = self.step().await {
                let trail = Vec::from(self.trail).join("\n  ");
                let (id, repo) = (self.id, self.repo.name);
                return Err(format!(
                    "worker {id} ({repo}): {error}\n  last operations (UTC):\n  {trail}"
                ));
            }
        }
        Ok(self)
    }

    async fn step(&mut self) -> Result<(), String> {
        match self.rng.gen_range(0..100) {
            0..30 => self.push_tagged_image().await,
            30..40 => self.push_index().await,
            40..60 => self.delete_manifest().await,
            60..70 => self.delete_tag().await,
            70..75 => self.delete_used_blob().await,
            75..96 => self.pull().await,
            _ => self.admin_gc().await,
        }
    }

    fn note(&mut self, what: String) {
        if self.trail.len() == TRAIL_LENGTH {
            self.trail.pop_front();
        }
        self.trail.push_back(format!("{} {what}", clock()));
    }

    fn random_tag(&mut self) -> &'static str {
        TAGS[self.rng.gen_range(0..TAGS.len())]
    }

    async fn push_tagged_image(&mut self) -> Result<(), String> {
        let tag = self.random_tag();
        let (digest, stored) = self.push_image(Some(tag)).await?;
        if let Some(previous) = self.model.tags.insert(tag.to_owned(), digest.clone()) {
            self.tally.count("image pushed over a tag in use (moved)");
            self.note(format!("tag {tag} moved from {previous} to {digest}"));
        }
        self.model.manifests.insert(digest, stored);
        self.tally.count("image pushed");
        Ok(())
    }

    /// Two fresh platform images by digest, then an OCI index over them under a tag.
    async fn push_index(&mut self) -> Result<(), String> {
        let tag = self.random_tag();
        let (mut entries, mut children) = (Vec::new(), Vec::new());
        for architecture in ["amd64", "arm64"] {
            let (digest, stored) = self.push_image(None).await?;
            entries.push(json!({
                "mediaType": OCI_MANIFEST, "digest": digest.to_string(), "size": stored.bytes.len(),
                "platform": {"architecture": architecture, "os": "linux"},
            }));
            self.model.manifests.insert(digest.clone(), stored);
            children.push(digest);
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let bytes = index.to_string().into_bytes();
        let digest = Digest::sha256_of(&bytes);
        self.note(format!("PUT index {digest} as {tag}"));
        let answer = self.repo.put_manifest(tag, OCI_INDEX, &bytes).await?;
        answer.expect(StatusCode::CREATED, "", "index PUT")?;
        self.model.tags.insert(tag.to_owned(), digest.clone());
        self.model
            .manifests
            .insert(digest, Stored::index(bytes, children));
        self.tally.count("index pushed (over two new images)");
        Ok(())
    }

    /// Pushes a fresh image under `tag`, or by digest. A manifest PUT refused because the
    /// collector took a blob it was entitled to take (see `lost_legitimately`) starts over from
    /// the HEADs; any other refusal fails.
    async fn push_image(&mut self, tag: Option<&str>) -> Result<(Digest, Stored), String> {
        let blobs = self.compose_image();
        let bytes = image_manifest(&blobs);
        let digest = Digest::sha256_of(&bytes);
        let reference = tag.map_or_else(|| digest.to_string(), str::to_owned);
        for _ in 0..IMAGE_ATTEMPTS {
            let mut committed = Vec::with_capacity(blobs.len());
            for blob in &blobs {
                committed.push(self.ensure_blob(blob).await?);
            }
            self.note(format!("PUT image {digest} as {reference}"));
            let answer = self
                .repo
                .put_manifest(&reference, OCI_MANIFEST, &bytes)
                .await?;
            if answer.status == StatusCode::CREATED {
                return Ok((digest, Stored::image(bytes, blobs)));
            }
            let lost = if answer.is(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN") {
                self.lost_legitimately(&blobs, &committed, Instant::now())
            } else {
                None
            };
            let Some(why) = lost else {
                let ages: Vec<String> = committed
                    .iter()
                    .map(|at| at.map_or("HEAD".to_owned(), |at| format!("{:?}", at.elapsed())))
                    .collect();
                return Err(format!(
                    "manifest PUT {reference}: {} {} (blobs committed this long ago: {ages:?}; \
                     none was collectable)",
                    answer.status,
                    answer.text()
                ));
            };
            self.tally.count(why);
        }
        Err(format!("image {digest} refused {IMAGE_ATTEMPTS} times"))
    }

    /// Why the collector may have removed one of `blobs` from the repository before the manifest
    /// PUT was answered, if it may: a blob no manifest of the repository uses stays linked only
    /// for the upload grace after its commit, and one HEAD found may be past it already.
    fn lost_legitimately(
        &self,
        blobs: &[Blob],
        committed: &[Option<Instant>],
        answered: Instant,
    ) -> Option<&'static str> {
        let mut unused = blobs
            .iter()
            .zip(committed)
            .filter(|(blob, _)| !self.model.uses_blob(&blob.digest));
        unused.find_map(|(_, committed)| match committed {
            None => Some(HEAD_RACE),
            Some(at) if answered.duration_since(*at) + CLOCK_SLACK >= UPLOAD_GRACE => {
                Some(GRACE_RACE)
            }
            Some(_) => None,
        })
    }

    /// A fresh config, one to three distinct pool layers and, one time in four, one of its own.
    fn compose_image(&mut self) -> Vec<Blob> {
        self.images_made += 1;
        let labels = json!({
            "worker": self.id.to_string(), "image": self.images_made.to_string(),
            "nonce": self.rng.gen::<u64>().to_string(),
        });
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let mut blobs = vec![Blob::new(config.to_string().into_bytes())];
        let shared = self.rng.gen_range(1..=3);
        blobs.extend(self.pool.choose_multiple(&mut self.rng, shared).cloned());
        if self.rng.gen_bool(0.25) {
            let len = self.rng.gen_range(1..=MAX_LAYER);
            blobs.push(Blob::random(&mut self.rng, len));
        }
        blobs
    }

    /// Makes `blob` present in the repository as clients do: HEAD, and upload only on 404
    /// (monolithic or chunked, at random), again after a 503. Returns when the committing request
    /// was sent, or `None` when HEAD found the blob.
    async fn ensure_blob(&mut self, blob: &Blob) -> Result<Option<Instant>, String> {
        let head = self
            .repo
            .request(Method::HEAD, &format!("blobs/{}", blob.digest));
        let answer = self.repo.send(head, "blob HEAD").await?;
        if answer.status == StatusCode::OK {
            self.tally.count("blob found by HEAD (not pushed)");
            return Ok(None);
        }
        answer.expect(StatusCode::NOT_FOUND, "", "blob HEAD")?;
        for _ in 0..UPLOAD_ATTEMPTS {
            let chunked = self.rng.gen_bool(0.5);
            self.note(format!("upload {} (chunked: {chunked})", blob.digest));
            let upload = if chunked {
                self.tally.count("blob upload, chunked");
                self.repo.upload_chunked(blob).await?
            } else {
                self.tally.count("blob upload, monolithic");
                self.repo.upload_monolithic(blob).await?
            };
            match upload {
                Upload::Committed(at) => return Ok(Some(at)),
                // The pause the registry asks for, as a client honours it: a backoff between
                // attempts, not a wait for something the test could watch instead.
                Upload::Refused(pause) => {
                    self.tally
                        .count("blob upload refused with 503 (pushed again)");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(format!(
            "blob {} refused {UPLOAD_ATTEMPTS} times",
            blob.digest
        ))
    }

    /// Deletes a manifest by digest: usually one a tag points at, else any in the repository.
    /// A child of a live index must be refused (403 DENIED); any other goes with its tags and,
    /// for an index, its untagged children.
    async fn delete_manifest(&mut self) -> Result<(), String> {
        let candidates: Vec<Digest> = if self.rng.gen_bool(0.6) {
            self.model.tags.values().cloned().collect()
        } else {
            self.model.manifests.keys().cloned().collect()
        };
        let Some(digest) = candidates.choose(&mut self.rng) else {
            return Ok(());
        };
        let refused = self.model.listed_by_index(digest);
        self.note(format!(
            "DELETE manifest {digest} (refusal expected: {refused})"
        ));
        let answer = self.repo.delete(&format!("manifests/{digest}")).await?;
        if refused {
            answer.expect(
                StatusCode::FORBIDDEN,
                "DENIED",
                "DELETE of an index's child",
            )?;
            self.tally
                .count("manifest delete refused: child of a live index (403)");
        } else {
            answer.expect(StatusCode::ACCEPTED, "", "manifest DELETE")?;
            let removed = self.model.remove(digest).len() as u64;
            self.tally.count("manifest deleted by digest");
            self.tally
                .add("children removed with their index", removed - 1);
        }
        Ok(())
    }

    /// Deletes a tag (the manifest stays), or one not in use, which must answer 404.
    async fn delete_tag(&mut self) -> Result<(), String> {
        let tag = self.random_tag();
        let present = self.model.tags.contains_key(tag);
        self.note(format!("DELETE tag {tag} (present: {present})"));
        let answer = self.repo.delete(&format!("manifests/{tag}")).await?;
        if present {
            answer.expect(StatusCode::ACCEPTED, "", "tag DELETE")?;
            self.model.tags.remove(tag);
            self.tally.count("tag deleted (manifest stays)");
        } else {
            answer.expect(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "DELETE of no tag",
            )?;
            self.tally.count("delete of a tag not in use (404)");
        }
        Ok(())
    }

    /// A blob a manifest of the repository uses cannot be deleted (403 DENIED).
    async fn delete_used_blob(&mut self) -> Result<(), String> {
        let used: Vec<&Digest> = self
            .model
            .manifests
            .values()
            .flat_map(|stored| stored.blobs.iter().map(|blob| &blob.digest))
            .collect();
        let Some(digest) = used.choose(&mut self.rng).map(|digest| (*digest).clone()) else {
            return Ok(());
        };
        self.note(format!("DELETE used blob {digest}"));
        let answer = self.repo.delete(&format!("blobs/{digest}")).await?;
        answer.expect(StatusCode::FORBIDDEN, "DENIED", "DELETE of a used blob")?;
        self.tally
            .count("blob delete refused: used by a manifest (403)");
        Ok(())
    }

    /// Reads back one manifest of the repository and everything under it, while GC runs.
    async fn pull(&mut self) -> Result<(), String> {
        let digests: Vec<&Digest> = self.model.manifests.keys().collect();
        let Some(digest) = digests
            .choose(&mut self.rng)
            .map(|digest| (*digest).clone())
        else {
            return Ok(());
        };
        self.note(format!("pull {digest}"));
        self.repo.verify_tree(&self.model, &digest).await?;
        self.tally
            .count("manifest pulled and verified during the load");
        Ok(())
    }

    async fn admin_gc(&mut self) -> Result<(), String> {
        self.note("wharf admin gc".to_owned());
        let report = admin_json(&self.serve, &["gc"]).await?;
        let field = |name: &str| {
            let value = report[name].as_u64();
            value.ok_or_else(|| format!("wharf admin gc printed no {name}: {report}"))
        };
        let (links, doomed) = (field("links_removed")?, field("blobs_doomed")?);
        field("fences_expired")?;
        self.tally.count("wharf admin gc");
        self.tally.add("wharf admin gc: links removed", links);
        self.tally.add("wharf admin gc: blobs doomed", doomed);
        Ok(())
    }

    /// Deletes every manifest by digest, indexes first: each takes its untagged children along,
    /// so a DELETE of such a child must answer 404 afterwards. Returns the DELETEs issued.
    pub async fn delete_everything(&mut self) -> Result<u64, String> {
        let indexes: Vec<Digest> = self
            .model
            .manifests
            .iter()
            .filter(|(_, stored)| !stored.children.is_empty())
            .map(|(digest, _)| digest.clone())
            .collect();
        let mut taken_along = Vec::new();
        for digest in &indexes {
            let answer = self.repo.delete(&format!("manifests/{digest}")).await?;
            answer.expect(StatusCode::ACCEPTED, "", "index DELETE")?;
            taken_along.extend(self.model.remove(digest).into_iter().skip(1));
        }
        for child in &taken_along {
            let answer = self.repo.delete(&format!("manifests/{child}")).await?;
            let what = "DELETE of a child gone with its index";
            answer.expect(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", what)?;
        }
        let rest: Vec<Digest> = self.model.manifests.keys().cloned().collect();
        for digest in &rest {
            let answer = self.repo.delete(&format!("manifests/{digest}")).await?;
            answer.expect(StatusCode::ACCEPTED, "", "manifest DELETE")?;
            self.model.remove(digest);
        }
        Ok((indexes.len() + taken_along.len() + rest.len()) as u64)
    }
}

/// UTC time of day in milliseconds, to line a worker's trail up with `serve.log`.
fn clock() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = since_epoch.as_millis() % 86_400_000;
    let (hours, minutes, seconds) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    format!("{hours:02}:{minutes:02}:{seconds:02}.{:03}", ms % 1000)
}
