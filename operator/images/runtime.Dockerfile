# syntax=docker/dockerfile:1
# The Kiln runtime image: kiln-trainer, kiln-server and kiln-router, the programs of the pods Kiln
# creates (the chart's trainerImage and servingImage). The pods name the program in their command.
# EXTRAS picks optional dependencies of kiln, e.g. torch for distributed PyTorch training:
#   docker build -f operator/images/runtime.Dockerfile -t ghcr.io/kiln-dev/kiln-runtime:0.1.0 .
#   docker build -f operator/images/runtime.Dockerfile --build-arg EXTRAS=torch \
#     -t ghcr.io/kiln-dev/kiln-runtime:0.1.0-torch .
# See README.md beside it.

# Build every wheel the runtimes need, kiln's own included.
FROM python:3.11.9-slim-bookworm AS builder
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}" \
    && echo "kiln${EXTRAS:+[$EXTRAS]}" > /wheels/requirements.txt

# Install them, offline, into a slim image that runs as the same non-root user as the pods Kiln creates.
FROM python:3.11.9-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels --requirement /wheels/requirements.txt \
    && groupadd --gid 65532 kiln \
    && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin kiln
# Kiln's pods run it read-only as 65532 (runAsUser), with writable volumes where a program writes.
USER 65532:65532
WORKDIR /tmp
CMD ["kiln-server"]
