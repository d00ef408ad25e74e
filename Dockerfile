# Wharf in a `FROM scratch` image: one fully static binary and nothing else (no shell, no libc,
# no CA bundle). Build it with `scripts/build-image.sh`, which compiles the static binary and runs
# `docker build` on a small context holding `wharf`, this file and `rootfs/` (empty /data, /tmp).
# (`scripts/build-image.sh --binary PATH`, which .ci/run uses on its debug build, packs a dynamic
# binary instead, with the shared libraries it loads in `rootfs/`.)
FROM scratch

# (No --chmod: the legacy builder on this engine lacks it; the context keeps the mode bits.)
COPY wharf /wharf
# /data must exist and belong to the runtime user before a volume is mounted over it: Docker
# copies an image directory's ownership into a new named volume.
COPY --chown=65532:65532 rootfs/ /

# A numeric user: scratch has no /etc/passwd, and none is needed.
USER 65532:65532
VOLUME ["/data"]
ENV WHARF_DATA=/data
# The OCI API (gateway, serve) and gRPC (meta, blob) ports used by the compose and k8s examples.
EXPOSE 5000 7000 7100
ENTRYPOINT ["/wharf"]
CMD ["serve", "--listen", "0.0.0.0:5000"]
