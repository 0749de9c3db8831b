# syntax=docker/dockerfile:1
# The Kiln operator image (the chart's image.repository, ghcr.io/kiln-dev/kiln). It holds the whole
# kiln package, so kiln-trainer, kiln-server and kiln-router are in it too: the chart's servingImage
# and trainerImage default to it. Build from the repository root:
#   docker build -f operator/images/operator.Dockerfile -t ghcr.io/kiln-dev/kiln:0.1.0 .
# See README.md beside it.

# Build every wheel the operator needs, its own included.
FROM python:3.11.9-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Install them, offline, into a slim image that runs as the chart's non-root user.
FROM python:3.11.9-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/kiln-*.whl \
    && groupadd --gid 65532 kiln \
    && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin kiln
# The chart runs it read-only with an emptyDir at /tmp; the restricted profile wants a numeric user.
USER 65532:65532
WORKDIR /tmp
CMD ["kiln", "run"]
