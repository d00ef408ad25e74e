//! The distribution-spec path grammar. Repository names are multi-segment (`a/b/c`), so the router
//! matches `/v2/` and `/v2/{*rest}` once and [`Route::parse`] splits the rest: the name is
//! everything before the last of `/blobs/uploads/`, `/blobs/`, `/manifests/`, `/tags/list` and
//! `/referrers/`. The parts are returned as text; `dispatch` validates them.

use axum::http::Method;

/// An API endpoint with its raw path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: String, id: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: String, reference: String },
    /// `/v2/<name>/tags/list`
    Tags { name: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: String, digest: String },
}

/// The markers that end a repository name; on a tie the longer marker wins.
const MARKERS: [&str; 5] = [
    "/blobs/uploads/",
    "/blobs/",
    "/manifests/",
    "/tags/list",
    "/referrers/",
];

impl Route {
    /// Parses a request path (still percent-encoded). `None` when it is no API endpoint.
    pub fn parse(path: &str) -> Option<Route> {
        let path = percent_decode(path);
        let rest = match path.as_str() {
            "/v2" | "/v2/" => return Some(Route::Base),
            other => other.strip_prefix("/v2/")?,
        };
        if rest == "_catalog" {
            return Some(Route::Catalog);
        }
        // Searching "/<rest>" lets an empty name (`/v2/blobs/...`) reach name validation.
        let slashed = format!("/{rest}");
        if let Some(name) = slashed.strip_suffix("/blobs/uploads") {
            // `name` is empty for `/v2/blobs/uploads`, else `/<name>`.
            return Some(Route::UploadStart {
                name: name.strip_prefix('/').unwrap_or_default().to_owned(),
            });
        }
        let (position, marker) = MARKERS
            .iter()
            .filter_map(|marker| slashed.rfind(marker).map(|position| (position, *marker)))
            .max_by_key(|(position, marker)| (*position, marker.len()))?;
        let name = if position == 0 {
            String::new()
        } else {
            slashed[1..position].to_owned()
        };
        let tail = &slashed[position + marker.len()..];
        let segment = (!tail.is_empty() && !tail.contains('/')).then(|| tail.to_owned());
        match marker {
            "/blobs/uploads/" if tail.is_empty() => Some(Route::UploadStart { name }),
            // Any tail is an upload id here, slashes included, so a bogus id (`../../x`) gets
            // BLOB_UPLOAD_UNKNOWN from id validation rather than an unknown-endpoint 404.
            "/blobs/uploads/" => Some(Route::Upload {
                name,
                id: tail.to_owned(),
            }),
            "/blobs/" => segment.map(|digest| Route::Blob { name, digest }),
            "/manifests/" => segment.map(|reference| Route::Manifest { name, reference }),
            "/tags/list" => tail.is_empty().then_some(Route::Tags { name }),
            _ => segment.map(|digest| Route::Referrers { name, digest }),
        }
    }

    /// A short stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Blob { .. } => "blob",
            Route::UploadStart { .. } => "upload_start",
            Route::Upload { .. } => "upload",
            Route::Manifest { .. } => "manifest",
            Route::Tags { .. } => "tags",
            Route::Referrers { .. } => "referrers",
        }
    }

    /// The repository name, for routes that have one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Manifest { name, .. }
            | Route::Tags { name }
            | Route::Referrers { name, .. } => Some(name),
        }
    }

    /// The methods this endpoint serves, as an `Allow` header lists them.
    pub fn allowed(&self) -> &'static str {
        match self {
            Route::Base => "GET, HEAD",
            Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => "GET",
            Route::Blob { .. } => "GET, HEAD, DELETE",
            Route::UploadStart { .. } => "POST",
            Route::Upload { .. } => "GET, PATCH, PUT, DELETE",
            Route::Manifest { .. } => "GET, HEAD, PUT, DELETE",
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.allowed()
            .split(", ")
            .any(|allowed| allowed == method.as_str())
    }
}

/// Decodes `%XX` escapes as Go's `net/http` (which Distribution runs on) does for paths, so
/// `sha256%3A...` works; an escape that is not two hex digits stays as it is and fails validation.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn parses_every_endpoint() {
        let digest = "sha256:abc";
        let cases = [
            ("/v2/", Route::Base),
            ("/v2", Route::Base),
            ("/v2/_catalog", Route::Catalog),
            (
                "/v2/a/b/c/blobs/sha256:abc",
                Route::Blob {
                    name: name("a/b/c"),
                    digest: name(digest),
                },
            ),
            (
                "/v2/a/blobs/uploads/",
                Route::UploadStart { name: name("a") },
            ),
            (
                "/v2/a/blobs/uploads",
                Route::UploadStart { name: name("a") },
            ),
            (
                "/v2/a/blobs/uploads/0123",
                Route::Upload {
                    name: name("a"),
                    id: name("0123"),
                },
            ),
            (
                "/v2/a/manifests/latest",
                Route::Manifest {
                    name: name("a"),
                    reference: name("latest"),
                },
            ),
            ("/v2/a/b/tags/list", Route::Tags { name: name("a/b") }),
            (
                "/v2/a/referrers/sha256:abc",
                Route::Referrers {
                    name: name("a"),
                    digest: name(digest),
                },
            ),
        ];
        for (path, route) in cases {
            assert_eq!(Route::parse(path), Some(route), "{path}");
        }
    }

    #[test]
    fn the_name_ends_at_the_last_marker() {
        assert_eq!(
            Route::parse("/v2/x/manifests/y/blobs/sha256:abc"),
            Some(Route::Blob {
                name: name("x/manifests/y"),
                digest: name("sha256:abc")
            })
        );
        assert_eq!(
            Route::parse("/v2/x/blobs/blobs/uploads/id"),
            Some(Route::Upload {
                name: name("x/blobs"),
                id: name("id")
            })
        );
        assert_eq!(
            Route::parse("/v2/tags/list/tags/list"),
            Some(Route::Tags {
                name: name("tags/list")
            })
        );
        assert_eq!(
            Route::parse("/v2/blobs/sha256:abc"),
            Some(Route::Blob {
                name: String::new(),
                digest: name("sha256:abc")
            })
        );
        // Found by the fuzz target `names` (fuzz/regressions/names/): this path panicked
        // (slicing the empty name) instead of reaching name validation.
        assert_eq!(
            Route::parse("/v2/blobs/uploads"),
            Some(Route::UploadStart {
                name: String::new()
            })
        );
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(
            Route::parse("/v2/a/manifests/sha256%3Aabc"),
            Some(Route::Manifest {
                name: name("a"),
                reference: name("sha256:abc")
            })
        );
        assert_eq!(
            Route::parse("/v2/a%zz/tags/list"),
            Some(Route::Tags { name: name("a%zz") })
        );
    }

    #[test]
    fn unknown_paths() {
        for path in [
            "/",
            "/v1/search",
            "/v2x/",
            "/v2/a",
            "/v2/a/b",
            "/v2/a/manifests/",
            "/v2/a/manifests/v1/extra",
            "/v2/a/blobs/",
            "/v2/a/tags/listing",
            "/v2/a/tags/list/",
            "/v2/a/referrers/",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    #[test]
    fn methods() {
        let blob = Route::Blob {
            name: name("a"),
            digest: name("d"),
        };
        assert!(blob.allows(&Method::HEAD));
        assert!(!blob.allows(&Method::PUT));
        assert!(Route::Upload {
            name: name("a"),
            id: name("i")
        }
        .allows(&Method::PATCH));
        assert!(!Route::Catalog.allows(&Method::POST));
    }
}
