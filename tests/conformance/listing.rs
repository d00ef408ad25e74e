//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`: lexical order, `n`, `last`, and the
//! `Link: <...>; rel="next"` header followed to the end.

use crate::client::{encode, essence, send, strip_origin, Registry, Reply};
use crate::fixtures::{push_image, push_manifest, random_hex, Image};

const REPO: &str = "library/listing";

fn tags_path(repo: &str) -> String {
    format!("/v2/{repo}/tags/list")
}

/// Pushes one image and tags it with each of `tags`, in the given order.
async fn push_tags(registry: &Registry, repo: &str, tags: &[String]) -> Image {
    let image = push_image(registry, repo, &tags[0]).await;
    for tag in &tags[1..] {
        push_manifest(registry, repo, tag, &image.manifest).await;
    }
    image
}

/// Tags in no particular order, including ones whose lexical order differs from version order.
fn unsorted_tags(random: usize) -> Vec<String> {
    let mut tags: Vec<String> = ["v1.9", "latest", "v1.10", "v1.0", "a", "0.1", "z-last"]
        .iter()
        .map(|tag| (*tag).to_owned())
        .collect();
    tags.extend((0..random).map(|_| random_hex(10)));
    tags
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut sorted = items.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
}

/// The strings of the JSON array at `key`.
fn strings(reply: &Reply, key: &str) -> Vec<String> {
    let body = reply.json();
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no {key} array in {body}", reply.context))
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

/// The target of a `Link: <target>; rel="next"` header, relative to the origin.
fn next_link(reply: &Reply) -> Option<String> {
    let link = reply.header("link")?;
    let (target, params) = link
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .unwrap_or_else(|| panic!("{}: malformed Link {link:?}", reply.context));
    let params: Vec<&str> = params.split(';').map(str::trim).collect();
    assert!(
        params.contains(&"rel=\"next\""),
        "{}: Link {link:?} is not rel=\"next\"",
        reply.context
    );
    Some(strip_origin(target))
}

/// Asserts `Link: <<path>?n=<n>&last=<last>>; rel="next"` (the values in any valid encoding).
fn expect_next(reply: &Reply, path: &str, n: usize, last: &str) {
    let link = next_link(reply).unwrap_or_else(|| panic!("{}: no Link", reply.context));
    let (link_path, query) = link
        .split_once('?')
        .unwrap_or_else(|| panic!("Link {link} has no query"));
    assert_eq!(link_path, path, "Link {link}");
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect();
    pairs.sort();
    let mut expected = vec![
        ("last".to_owned(), last.to_owned()),
        ("n".to_owned(), n.to_string()),
    ];
    expected.sort();
    assert_eq!(pairs, expected, "Link {link}");
}

/// Decodes a query component (`%XX` and `+`).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[index]) {
            (Some(byte), _) => {
                decoded.push(byte);
                index += 3;
            }
            (None, b'+') => {
                decoded.push(b' ');
                index += 1;
            }
            (None, byte) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(decoded).expect("UTF-8 after decoding")
}

/// Follows `Link` headers from `first` to the end; each page has at most `n` items.
async fn collect_pages(registry: &Registry, first: String, key: &str, n: usize) -> Vec<String> {
    let base = first.split('?').next().unwrap_or_default().to_owned();
    let mut items = Vec::new();
    let mut next = Some(first);
    let mut pages = 0;
    while let Some(path) = next {
        let reply = send(registry.get(&path)).await;
        reply.expect_status(200);
        let page = strings(&reply, key);
        assert!(page.len() <= n, "{path}: {} items, over n={n}", page.len());
        next = next_link(&reply);
        if let Some(link) = &next {
            assert!(
                link.starts_with(&format!("{base}?")),
                "Link {link} leaves {base}"
            );
            assert!(!page.is_empty(), "{path}: an empty page with a Link");
        }
        items.extend(page);
        pages += 1;
        assert!(pages < 1_000, "the Link chain does not end");
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_is_lexically_sorted_json_naming_the_repository() {
    let registry = Registry::start().await;
    let tags = unsorted_tags(8);
    push_tags(&registry, REPO, &tags).await;

    let reply = send(registry.get(&tags_path(REPO))).await;
    reply.expect_status(200);
    assert_eq!(essence(reply.required("content-type")), "application/json");
    assert_eq!(reply.json()["name"], REPO);
    assert_eq!(strings(&reply, "tags"), sorted(&tags));
    assert_eq!(reply.header("link"), None, "a Link on a complete list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_with_n_returns_the_first_n_and_a_next_link() {
    let registry = Registry::start().await;
    let tags = unsorted_tags(3);
    push_tags(&registry, REPO, &tags).await;
    let expected = sorted(&tags);

    let reply = send(registry.get(&format!("{}?n=3", tags_path(REPO)))).await;
    reply.expect_status(200);
    assert_eq!(strings(&reply, "tags"), expected[..3]);
    expect_next(&reply, &tags_path(REPO), 3, &expected[2]);

    // n at least the number of tags: everything, and no Link.
    for n in [expected.len(), expected.len() + 5] {
        let reply = send(registry.get(&format!("{}?n={n}", tags_path(REPO)))).await;
        reply.expect_status(200);
        assert_eq!(strings(&reply, "tags"), expected);
        assert_eq!(reply.header("link"), None, "n={n}: a Link after the end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_with_last_returns_only_the_tags_after_it() {
    let registry = Registry::start().await;
    let tags = unsorted_tags(4);
    push_tags(&registry, REPO, &tags).await;
    let expected = sorted(&tags);

    let path = format!("{}?last={}", tags_path(REPO), encode(&expected[3]));
    let reply = send(registry.get(&path)).await;
    reply.expect_status(200);
    assert_eq!(strings(&reply, "tags"), expected[4..]);

    let path = format!("{}?n=2&last={}", tags_path(REPO), encode(&expected[3]));
    let reply = send(registry.get(&path)).await;
    reply.expect_status(200);
    assert_eq!(strings(&reply, "tags"), expected[4..6]);

    // `last` need not be a tag: the list continues after where it would sort.
    let between = format!("{}~", expected[0]);
    let path = format!("{}?last={}", tags_path(REPO), encode(&between));
    let reply = send(registry.get(&path)).await;
    reply.expect_status(200);
    let after: Vec<String> = expected
        .iter()
        .filter(|tag| tag.as_str() > between.as_str())
        .cloned()
        .collect();
    assert_eq!(strings(&reply, "tags"), after);

    // After the last tag: an empty list.
    let path = format!(
        "{}?last={}",
        tags_path(REPO),
        encode(&expected[expected.len() - 1])
    );
    let reply = send(registry.get(&path)).await;
    reply.expect_status(200);
    assert!(strings(&reply, "tags").is_empty());
    assert_eq!(reply.header("link"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_with_n_zero_is_an_empty_list() {
    let registry = Registry::start().await;
    push_tags(&registry, REPO, &unsorted_tags(0)).await;
    let reply = send(registry.get(&format!("{}?n=0", tags_path(REPO)))).await;
    reply.expect_status(200);
    assert!(strings(&reply, "tags").is_empty());
    assert_eq!(reply.header("link"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_tags_list_links_yields_every_tag_exactly_once() {
    let registry = Registry::start().await;
    let tags = unsorted_tags(16);
    push_tags(&registry, REPO, &tags).await;

    for n in [1, 4, 5, 22] {
        let first = format!("{}?n={n}", tags_path(REPO));
        let collected = collect_pages(&registry, first, "tags", n).await;
        assert_eq!(collected, sorted(&tags), "paging with n={n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_of_an_unknown_repository_is_404_name_unknown() {
    let registry = Registry::start().await;
    push_tags(&registry, REPO, &unsorted_tags(0)).await;
    for repo in ["library/unknown", "library/listing/deeper"] {
        send(registry.get(&tags_path(repo)))
            .await
            .expect_error(404, "NAME_UNKNOWN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_with_invalid_n_is_400_pagination_number_invalid() {
    let registry = Registry::start().await;
    push_tags(&registry, REPO, &unsorted_tags(0)).await;
    for n in ["abc", "-1", "1.5"] {
        send(registry.get(&format!("{}?n={n}", tags_path(REPO))))
            .await
            .expect_error(400, "PAGINATION_NUMBER_INVALID");
    }
    send(registry.get("/v2/_catalog?n=x"))
        .await
        .expect_error(400, "PAGINATION_NUMBER_INVALID");
}

/// Repositories, multi-segment among them, pushed in no particular order.
async fn push_repositories(registry: &Registry) -> Vec<String> {
    let suffix = random_hex(6);
    let repos: Vec<String> = [
        "zeta",
        "alpha/one",
        "alpha",
        "alpha/two/deep",
        "b-c",
        "b.c",
        "b_c",
        "m/n",
        "k",
    ]
    .iter()
    .map(|name| format!("{name}-{suffix}"))
    .collect();
    for repo in &repos {
        push_image(registry, repo, "latest").await;
    }
    repos
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_every_repository_lexically_sorted() {
    let registry = Registry::start().await;
    let repos = push_repositories(&registry).await;

    let reply = send(registry.get("/v2/_catalog")).await;
    reply.expect_status(200);
    assert_eq!(essence(reply.required("content-type")), "application/json");
    assert_eq!(strings(&reply, "repositories"), sorted(&repos));
    assert_eq!(reply.header("link"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_pages_with_n_last_and_link_to_the_end() {
    let registry = Registry::start().await;
    let repos = push_repositories(&registry).await;
    let expected = sorted(&repos);

    let reply = send(registry.get("/v2/_catalog?n=2")).await;
    reply.expect_status(200);
    assert_eq!(strings(&reply, "repositories"), expected[..2]);
    expect_next(&reply, "/v2/_catalog", 2, &expected[1]);

    let path = format!("/v2/_catalog?n=3&last={}", encode(&expected[2]));
    let reply = send(registry.get(&path)).await;
    reply.expect_status(200);
    assert_eq!(strings(&reply, "repositories"), expected[3..6]);

    for n in [1, 2, 4, 100] {
        let collected =
            collect_pages(&registry, format!("/v2/_catalog?n={n}"), "repositories", n).await;
        assert_eq!(collected, expected, "paging with n={n}");
    }
}
