#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (deterministic; run again after changing
it). The manifests have the shapes registries really serve: Docker Hub's OCI indexes with
attestation manifests, Docker schema 2 manifests and manifest lists (docker's own 3-space
indentation), Windows images with foreign layers, Helm charts, cosign signatures, in-toto
attestations, ORAS artifacts with artifactType and subject, a referrers index, and a schema 1
manifest (refused). The other targets get small hand-written values of their headers, paths,
queries, forms and messages. The proto seeds are written by the `proto` target's own encoder:
`cargo run --manifest-path fuzz/Cargo.toml --example proto_seeds`."""

import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# The keys the targets check signatures with (fuzz_targets/digest.rs, blob_http.rs).
KEY = b"wharf fuzz blob-url and uploads!"
NOW = 1_800_000_000


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data):
    return "sha512:" + hashlib.sha512(data).hexdigest()


def desc(media_type, name, size, **extra):
    d = {"mediaType": media_type, "digest": sha256(name.encode()), "size": size}
    d.update(extra)
    return d


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def manifest_seed(name, content_type, value, indent=None, sort_keys=False):
    body = json.dumps(value, indent=indent, sort_keys=sort_keys, separators=None if indent else (",", ":"))
    write("manifest", name, (content_type or "") + "\n" + body)
    return body


def manifests():
    created = "2024-09-06T12:05:36Z"
    alpine_platforms = [
        ("amd64", None), ("arm", "v6"), ("arm", "v7"), ("arm64", "v8"),
        ("386", None), ("ppc64le", None), ("riscv64", None), ("s390x", None),
    ]
    entries = []
    for arch, variant in alpine_platforms:
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        image = desc(OCI_MANIFEST, "alpine-" + arch + (variant or ""), 1022, platform=platform)
        image["annotations"] = {
            "com.docker.official-images.bashbrew.arch": arch + (variant or ""),
            "org.opencontainers.image.base.name": "scratch",
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.revision": "8b3f1f6e0d1f3a4cd4b64e6c0ac7a3ac56df9ea4",
            "org.opencontainers.image.source": "https://github.com/alpinelinux/docker-alpine.git#8b3f1f6e",
            "org.opencontainers.image.url": "https://hub.docker.com/_/alpine",
            "org.opencontainers.image.version": "3.20.3",
        }
        entries.append(image)
        attestation = desc(OCI_MANIFEST, "attest-" + arch + (variant or ""), 839,
                           platform={"architecture": "unknown", "os": "unknown"})
        attestation["annotations"] = {
            "com.docker.official-images.bashbrew.arch": arch + (variant or ""),
            "vnd.docker.reference.digest": image["digest"],
            "vnd.docker.reference.type": "attestation-manifest",
        }
        entries.append(attestation)
    manifest_seed("oci-index-dockerhub-alpine", OCI_INDEX,
                  {"manifests": entries, "mediaType": OCI_INDEX, "schemaVersion": 2}, sort_keys=True)

    alpine_image = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, "alpine-config", 581),
        "layers": [desc(OCI_LAYER, "alpine-rootfs", 3623807)],
        "annotations": {
            "com.docker.official-images.bashbrew.arch": "amd64",
            "org.opencontainers.image.base.name": "scratch",
            "org.opencontainers.image.created": created,
            "org.opencontainers.image.version": "3.20.3",
        },
    }
    manifest_seed("oci-image-alpine", OCI_MANIFEST, alpine_image)
    manifest_seed("oci-image-no-content-type", "", alpine_image)
    manifest_seed("oci-image-charset", OCI_MANIFEST + "; charset=utf-8", alpine_image)

    attestation = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, "attestation-config", 167),
        "layers": [
            desc("application/vnd.in-toto+json", "spdx", 139271,
                 annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"}),
            desc("application/vnd.in-toto+json", "provenance", 6511,
                 annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}),
        ],
    }
    manifest_seed("oci-attestation-buildkit", OCI_MANIFEST, attestation)

    docker_image = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, "nginx-config", 8289),
        "layers": [desc(DOCKER_LAYER, "nginx-layer-%d" % i, 1000 * (i + 1) ** 3) for i in range(6)],
    }
    manifest_seed("docker-manifest-nginx", DOCKER_MANIFEST, docker_image, indent=3)

    docker_list = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            desc(DOCKER_MANIFEST, "busybox-amd64", 527, platform={"architecture": "amd64", "os": "linux"}),
            desc(DOCKER_MANIFEST, "busybox-armv5", 527,
                 platform={"architecture": "arm", "os": "linux", "variant": "v5"}),
            desc(DOCKER_MANIFEST, "busybox-win", 1123, platform={
                "architecture": "amd64", "os": "windows", "os.version": "10.0.17763.6293",
                "os.features": ["win32k"]}),
        ],
    }
    manifest_seed("docker-manifest-list-busybox", DOCKER_LIST, docker_list, indent=3)

    windows = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, "nanoserver-config", 1206),
        "layers": [
            desc("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "nanoserver-base", 122017427,
                 urls=["https://mcr.microsoft.com/v2/windows/nanoserver/blobs/" + sha256(b"nanoserver-base")]),
            desc(DOCKER_LAYER, "nanoserver-layer", 1063),
        ],
    }
    manifest_seed("docker-manifest-windows-foreign", DOCKER_MANIFEST, windows, indent=3)

    helm = {
        "schemaVersion": 2,
        "config": desc("application/vnd.cncf.helm.config.v1+json", "chart-config", 148),
        "layers": [desc("application/vnd.cncf.helm.chart.content.v1.tar+gzip", "chart", 3657)],
        "annotations": {
            "org.opencontainers.image.description": "A Helm chart for Kubernetes",
            "org.opencontainers.image.title": "podinfo",
            "org.opencontainers.image.version": "6.7.0",
        },
    }
    manifest_seed("oci-helm-chart", OCI_MANIFEST, helm)

    cosign = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, "cosign-config", 233),
        "layers": [desc("application/vnd.dev.cosign.simplesigning.v1+json", "simplesigning", 255, annotations={
            "dev.cosignproject.cosign/signature":
                "MEUCIQDXZ2kJ6pU4t2mN2l6zv4Fq5bUo2oS7n3fX6eK1cYQb3wIgB3Jz1W0p5Q7xXy0G8w0f7s1pR6v2bq9Kx0n0aQ6dC8w=",
            "dev.sigstore.cosign/bundle": json.dumps({"SignedEntryTimestamp": "MEQCIB", "Payload": {
                "body": "eyJhcGlWZXJzaW9uIjoiMC4wLjEifQ==", "integratedTime": 1725624336,
                "logIndex": 127123456, "logID": "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d"}}),
        })],
    }
    manifest_seed("cosign-signature", OCI_MANIFEST, cosign)

    subject = desc(OCI_MANIFEST, "alpine-amd64", 1022)
    sbom = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2, "data": "e30="},
        "layers": [desc("application/spdx+json", "sbom.spdx.json", 24187,
                        annotations={"org.opencontainers.image.title": "sbom.spdx.json"})],
        "subject": subject,
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_seed("oras-sbom-referrer", OCI_MANIFEST, sbom)
    signature = dict(sbom, artifactType="application/vnd.cncf.notary.signature",
                     layers=[desc("application/jose+json", "notation-sig", 2105)])
    signature["annotations"] = {"io.cncf.notary.x509chain.thumbprint#S256":
                                "[\"b4f7a0f8bd2a3f2c7e7ad71c66ba1d2f0e9c3b5a8dd1f1e2c3b4a5968778695a\"]"}
    manifest_seed("notation-signature-referrer", OCI_MANIFEST, signature)

    referrer_index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [desc(OCI_MANIFEST, "bundle-part-1", 512, artifactType="application/vnd.example.part")],
        "subject": subject,
        "annotations": {"org.opencontainers.image.created": created},
    }
    manifest_seed("oci-index-with-subject", OCI_INDEX, referrer_index)
    manifest_seed("oci-index-inferred", "", {"schemaVersion": 2, "manifests": []})

    zstd = dict(alpine_image, layers=[desc("application/vnd.oci.image.layer.v1.tar+zstd", "zstd", 2990123),
                                      desc("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                                           "nondist", 5000, urls=["https://example.com/layer"])])
    zstd["config"] = dict(desc(OCI_CONFIG, "sha512-config", 581), digest=sha512(b"sha512-config"))
    manifest_seed("oci-image-zstd-sha512", OCI_MANIFEST, zstd)

    schema1 = {
        "schemaVersion": 1, "name": "library/hello-world", "tag": "latest", "architecture": "amd64",
        "fsLayers": [{"blobSum": sha256(b"a")}],
        "history": [{"v1Compatibility": "{\"id\":\"e45a5af57b00\"}"}],
        "signatures": [{"header": {"jwk": {"crv": "P-256", "kty": "EC", "x": "x", "y": "y"}, "alg": "ES256"},
                        "signature": "sig", "protected": "eyJmb3JtYXRMZW5ndGgiOjE0NzV9"}],
    }
    manifest_seed("docker-schema1-refused", "application/vnd.docker.distribution.manifest.v1+prettyjws",
                  schema1, indent=3)
    manifest_seed("mismatched-media-type", OCI_INDEX, alpine_image)


def names():
    d = sha256(b"layer")
    token = upload_token(b"fuzz/app", node=3, started=NOW * 1000, nonce=bytes(range(16)))
    values = [
        "library/alpine", "team-a/app", "a.b/c__d/e---f", "ghcr.io/owner/app", "UPPER/case", "a//b",
        "v1.2.3", "_latest", "sha256:" + "e" * 64, d, "latest", "a" * 129,
        "/v2/", "/v2/_catalog", "/v2/library/alpine/manifests/latest", "/v2/library/alpine/manifests/" + d,
        "/v2/a/b/c/blobs/" + d, "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/" + token,
        "/v2/a/tags/list", "/v2/a/referrers/" + d, "/v2/a/manifests/sha256%3A" + "0" * 64,
        "/v2/x/manifests/y/blobs/" + d, "/v2/a%2Fb/tags/list", "/v2/blobs/" + d,
    ]
    for i, value in enumerate(values):
        write("names", "seed-%02d" % i, value)


def upload_token(repo, node, started, nonce):
    signed = bytes([1]) + nonce + struct.pack(">QQ", node, started) + hashlib.sha256(repo).digest()[:8]
    mac = hmac.new(KEY, signed + repo, hashlib.sha256).digest()[:16]
    return (signed + mac).hex()


def blob_query(digest, expires):
    sig = hmac.new(KEY, ("GET\n%s\n%d" % (digest, expires)).encode(), hashlib.sha256).digest()[:16]
    return "expires=%d&sig=%s" % (expires, sig.hex())


def digests():
    d = sha256(b"blob")
    values = [
        d, sha512(b"blob"), "sha256:abc", "SHA256:" + "a" * 64, "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "sha256:" + "G" * 64,
        d + "?" + blob_query(d, NOW + 300), d + "?" + blob_query(d, NOW - 1),
        d + "?expires=1800000300&sig=00000000000000000000000000000000",
        upload_token(b"fuzz/app", node=7, started=NOW * 1000, nonce=bytes(16)),
        upload_token(b"other/app", node=1, started=1, nonce=b"\xff" * 16),
        "0123456789abcdef0123456789abcdef",
    ]
    for i, value in enumerate(values):
        write("digest", "seed-%02d" % i, value)


def ranges():
    values = [
        "1000\nbytes=0-99", "1000\nbytes=500-", "1000\nbytes=-200", "1000\nbytes=0-0,5-9",
        "10\nbytes=10-", "0\nbytes=0-", "1000\nitems=0-1", "18446744073709551615\nbytes=0-18446744073709551614",
        "1000\n0-999", "1000\nbytes 100-199/1000", "1000\nbytes=100-199/*", "1000\n 5 - 9 ",
    ]
    for i, value in enumerate(values):
        write("range", "seed-%02d" % i, value)


def accepts():
    values = [
        b"\x00" + OCI_MANIFEST.encode(),
        b"\x01" + (OCI_MANIFEST + ", " + OCI_INDEX + ", " + DOCKER_MANIFEST + ", " + DOCKER_LIST).encode(),
        b"\x02" + (DOCKER_MANIFEST + "\n" + DOCKER_LIST + "\napplication/vnd.docker.distribution.manifest.v1+prettyjws\napplication/json").encode(),
        b"\x0a" + b"text/html; q=0.9, */*; q=0.1",
        b"\x03" + b"application/*",
        b"\x09",
        b"\x04" + (OCI_INDEX + ";q=0.5").encode(),
    ]
    for i, value in enumerate(values):
        write("accept", "seed-%02d" % i, value)


def queries():
    d = sha256(b"blob")
    values = [
        "n=100", "n=10&last=alpine", "n=-1", "n=abc", "last=", "n=0",
        "digest=" + d, "mount=" + d + "&from=library%2Falpine", "mount=" + d + "&from=Bad",
        "digest=sha256%3A" + "a" * 64 + "&digest=junk", "artifactType=application%2Fspdx%2Bjson",
        "n=18446744073709551616", "last=a%2Fb&n=5&n=6",
    ]
    for i, value in enumerate(values):
        write("query", "seed-%02d" % i, value)


def auth_headers():
    values = [
        "Basic " + base64.b64encode(b"ci:s3cret").decode(),
        "basic " + base64.b64encode(b"robot$ci:a:b").decode(),
        "Bearer eyJhbGciOiJFZERTQSIsImtpZCI6ImFiIn0.e30.c2ln",
        "Bearer   ", "Digest username=\"a\"", "Basic !!!", "Basic " + base64.b64encode(b"nouser").decode(),
        'realm="http://127.0.0.1:5000/auth/token",service="wharf",scope="repository:a/b:pull,push"',
        'realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull",error="insufficient_scope"',
        "http://h/auth/token\nwharf\nrepository:a:pull",
        'Realm=unquoted,Service="x" , scope="a,b"',
    ]
    for i, value in enumerate(values):
        write("auth_headers", "seed-%02d" % i, value)


def jwt_seeds():
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"typ": "JWT", "alg": "EdDSA", "kid": "fuzzkey"}
    claims = {
        "iss": "wharf", "sub": "ci", "aud": "registry", "exp": NOW + 300, "nbf": NOW, "iat": NOW,
        "jti": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "access": [{"type": "repository", "name": "ci/app", "actions": ["pull", "push"]}],
        "use": "access", "gen": 3,
    }
    refresh = dict(claims, use="refresh", access=[], exp=NOW + 86400)
    signed = [
        (header, claims), (header, refresh), (dict(header, alg="HS256"), claims),
        (dict(header, kid="other"), claims), ({"alg": "none"}, claims),
        (header, dict(claims, exp=NOW - 100)), (header, dict(claims, aud="elsewhere")),
        (header, dict(claims, nbf=NOW + 1000)),
    ]
    for i, (h, c) in enumerate(signed):
        write("jwt", "signed-%02d" % i, b"\x01" + json.dumps(h).encode() + b"\n" + json.dumps(c).encode())
    raw = [
        b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode()) + "." + b64(b"\x00" * 64),
        "a.b.c", "", "eyJhbGciOiJub25lIn0.e30.",
    ]
    for i, token in enumerate(raw):
        write("jwt", "raw-%02d" % i, b"\x00" + token.encode())


def token_forms():
    values = [
        b"\x00scope=repository%3Apublic%2Fapp%3Apull&service=wharf",
        b"\x01grant_type=password&username=ci&password=s3cret&scope=repository%3Aci%2Fapp%3Apull%2Cpush+repository%3Apublic%2Fx%3Apull&service=wharf&access_type=offline&client_id=docker",
        b"\x01grant_type=refresh_token&refresh_token=eyJ.eyJ.sig&scope=repository%3Aci%2Fscratch%2Fa%3Adelete%2Cpull",
        b"\x02scope=registry%3Acatalog%3A*&scope=repository%3Ashared%2Fa%3Apull&offline_token=true",
        b"\x03scope=repository%3Aany%2Fthing%3A*&scope=repository(plugin)%3Ax%3Apull",
        b"\x01scope=repository%3ABAD%3Apull&scope=junk&scope=repository%3Aci%2Fa%3Apush&scope=repository%3Aci%2Fa%3Apull",
    ]
    for i, value in enumerate(values):
        write("token_form", "seed-%02d" % i, value)


def blob_http():
    d = sha256(b"blob")
    values = [
        "GET /blobs/%s?%s HTTP/1.1\r\nHost: node-1:5003\r\nRange: bytes=0-99\r\n\r\n" % (d, blob_query(d, NOW + 300)),
        "HEAD /blobs/%s?%s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % (d, blob_query(d, NOW + 60)),
        "GET /blobs/%s HTTP/1.1\r\nUser-Agent: docker/27.2.0\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n" % d,
        "POST /blobs/%s HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" % d,
        "GET /other HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /blobs/sha256:abc HTTP/1.1\r\n",
        "GET\x01 / HTTP/1.1\r\n\r\n",
    ]
    for i, value in enumerate(values):
        write("blob_http", "seed-%02d" % i, value)


if __name__ == "__main__":
    manifests()
    names()
    digests()
    ranges()
    accepts()
    queries()
    auth_headers()
    jwt_seeds()
    token_forms()
    blob_http()
