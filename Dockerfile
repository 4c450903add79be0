# syntax=docker/dockerfile:1
#
# The pydns image: a drop-in for CoreDNS's image (same entrypoint style, same ports).
#
#   docker build -t pydns:0.1.0 .
#
# Two stages.  "build" turns the source tree into wheels: pydns's own and one for every
# dependency.  The final stage starts again from a clean python:3.11-slim and installs
# those wheels offline into a virtual environment, through a bind mount, so no source
# tree, wheel file, build tool or pip cache ends up in a layer.  No compiler is needed
# anywhere: every dependency ships a binary wheel.
#
# The image runs as the unprivileged user 65532 and still serves port 53: the
# Deployment in deploy/ lowers the pod's net.ipv4.ip_unprivileged_port_start to 53, so
# no capability is needed (docs/image.md explains the choice).  Nothing is written at
# run time: byte code is compiled here and PYTHONDONTWRITEBYTECODE stops any rewrite,
# so the container works with a read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build: the wheels
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
ARG WHEELS=/wheels
WORKDIR /src
# Only what the wheel is made of: a change to tests or docs keeps the build cached.
COPY pyproject.toml README.md LICENSE ./
COPY pydns/ pydns/
RUN python -m pip wheel --wheel-dir "$WHEELS" .

# ---------------------------------------------------------------- the runtime image
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pydns" \
      org.opencontainers.image.description="A pure-Python cluster DNS server that can take CoreDNS's place in Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/pydns
ARG WHEELS=/wheels

# The same numeric user as distroless "nonroot" (and CoreDNS's image); numeric in USER
# below so that runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 65532 pydns \
    && useradd --system --uid 65532 --gid 65532 --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pydns

# The base image's pip installs into a venv that itself carries no pip; the wheels are
# mounted from the build stage for this step only.  compileall writes the byte code
# that a read-only filesystem would otherwise make Python recompile on every start.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip "$VIRTUAL_ENV" \
    && python -m pip --python "$VIRTUAL_ENV/bin/python" install \
        --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --no-index --find-links "$WHEELS" pydns-cluster \
    && python -m compileall -q "$VIRTUAL_ENV"

# The standard library's byte code, for the same reason; where the base image already
# ships it, this writes nothing.
RUN python -m compileall -q -x '/(tests?|idle_test)/' \
        "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

ENV PATH="$VIRTUAL_ENV/bin:$PATH"
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
