# syntax=docker/dockerfile:1
#
# The pydns image: a drop-in for CoreDNS's image (same entrypoint style, same ports).
#
#   docker build --build-arg REVISION="$(git rev-parse --short HEAD)" -t pydns:0.1.0 .
#
# Two stages.  "build" starts from the official Python image, pinned by digest, installs
# the dependencies exactly as image/requirements.lock has them (every file checked against
# its hash), builds and installs pydns into a virtual environment, and assembles the whole
# filesystem of the image in /rootfs (image/rootfs.py): the interpreter, the standard
# library, the virtual environment and the shared libraries they load, nothing else.  The
# final stage is that filesystem on an empty base: no shell, no package manager, no
# coreutils, no pip; nothing runs in it but Python and pydns.  docs/image.md has the sizes.
#
# The image runs as the unprivileged user 65532 and still serves port 53: the
# Deployment in deploy/ lowers the pod's net.ipv4.ip_unprivileged_port_start to 53, so
# no capability is needed (docs/image.md explains the choice).  Nothing is written at
# run time: all byte code is compiled in the build stage and PYTHONDONTWRITEBYTECODE
# stops any rewrite, so the container works with a read-only root filesystem.

# python:3.11.14-slim-bookworm, the multi-platform index (amd64 and arm64).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# ---------------------------------------------------------------- build: venv and root filesystem
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The locks first: a change to pydns's code keeps the dependency layer cached.
COPY image/build-requirements.lock image/requirements.lock image/
# setuptools as locked, to build pydns's wheel without fetching anything unhashed; then
# the runtime dependencies, binary wheels only, each checked against the lock's hashes.
# No byte code here: image/rootfs.py compiles what the image keeps.
RUN python -m pip install --require-hashes --no-deps -r image/build-requirements.lock \
    && python -m venv --without-pip /opt/pydns \
    && python -m pip --python /opt/pydns/bin/python install --require-hashes --no-deps --only-binary=:all: \
        --no-compile -r image/requirements.lock
# Only what the wheel and the root filesystem are made of.
COPY pyproject.toml README.md LICENSE ./
COPY pydns/ pydns/
COPY image/rootfs.py image/
ARG REVISION=""
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python -m pip --python /opt/pydns/bin/python install --no-deps --no-index --no-compile /wheels/pydns_cluster-*.whl \
    && python image/rootfs.py /opt/pydns /rootfs --revision "$REVISION"

# ---------------------------------------------------------------- the runtime image
FROM scratch
COPY --from=build /rootfs /
ARG REVISION=""
LABEL org.opencontainers.image.title="pydns" \
      org.opencontainers.image.description="A pure-Python cluster DNS server that can take CoreDNS's place in Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${REVISION}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/pydns \
    PATH=/opt/pydns/bin

# The same numeric user as distroless "nonroot" (and CoreDNS's image), named pydns in the
# image's /etc/passwd; numeric here so that runAsNonRoot can verify it without reading it.
USER 65532:65532
WORKDIR /

# DNS, metrics (prometheus), liveness (health), readiness (ready): CoreDNS's defaults.
EXPOSE 53/udp 53/tcp 9153 8080 8181

# Outside Kubernetes (docker run, compose): the health plugin's endpoint.  Kubernetes
# ignores this and uses the Deployment's probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]

ENTRYPOINT ["pydns"]
CMD ["-conf", "/etc/coredns/Corefile"]
