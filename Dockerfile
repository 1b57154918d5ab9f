# One image for every Parley service: the command names the service's module, e.g.
#   docker run parley:dev parley_identity        (parley_keydir, parley_relay, parley_moderation, parley_notification)
# Configuration comes only from PARLEY_* / OTEL_* environment variables at run time; nothing secret is in the image.
#
# BASE_IMAGE must provide python3 (3.11+) with the venv module, as the official image does. CI builds the same file
# on a Debian bookworm base made locally with debootstrap (tests/deploy/test_compose.py), because it reaches no
# image registry.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Extra pip options: CI passes --no-index to install only from the wheels it put into deploy/wheelhouse/.
ARG PIP_INSTALL_OPTS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY deploy/wheelhouse/ /wheelhouse/
# The runtime dependencies are read from pyproject.toml (one list for developers and images), pinned by
# constraints.txt; dumb-init is the image's init (PID 1 forwards SIGTERM so the service drains, and reaps zombies).
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > requirements.txt \
 && python3 -m venv /opt/parley/venv \
 && /opt/parley/venv/bin/pip install --find-links /wheelhouse $PIP_INSTALL_OPTS \
      -c constraints.txt -r requirements.txt dumb-init
COPY protos/ protos/
# Generated code lives in the image at the same place as in a checkout (libs/gen), made from the same protos.
RUN mkdir -p /opt/parley/app/libs/gen \
 && /opt/parley/venv/bin/python -m grpc_tools.protoc -I protos \
      --python_out=/opt/parley/app/libs/gen --grpc_python_out=/opt/parley/app/libs/gen \
      $(find protos -name '*.proto')
COPY libs/ /opt/parley/app/libs/
COPY services/ /opt/parley/app/services/
# protoc (grpcio-tools) is a compiler: it stays in this stage. The source roots go on the venv's path as the
# Makefile's `paths` target does, and everything is byte-compiled now because the root filesystem is read-only later.
RUN /opt/parley/venv/bin/pip uninstall -y -q grpcio-tools setuptools \
 && cd /opt/parley/app \
 && printf '%s\n' /opt/parley/app/libs /opt/parley/app/libs/gen /opt/parley/app/services/* \
      > "$(/opt/parley/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/parley-roots.pth" \
 && /opt/parley/venv/bin/python -m compileall -q /opt/parley/app /opt/parley/venv > /dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="parley" \
      org.opencontainers.image.description="Parley services: identity, keydir, relay, moderation, notification" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin parley
COPY --from=build /opt/parley /opt/parley
ENV PATH=/opt/parley/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PARLEY_HOST=0.0.0.0
USER 10001:10001
WORKDIR /opt/parley/app
# gRPC ports of identity, keydir, relay, moderation, notification (each service's default PARLEY_PORT).
EXPOSE 7100 7101 7102 7103 7104
# No HEALTHCHECK here: the image does not know which service a container runs. Compose runs
# `python -m parley_runtime.healthcheck --port <port>` per service; Kubernetes uses native gRPC probes.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dumb-init", "--", "python", "-m"]
CMD ["parley_relay"]
