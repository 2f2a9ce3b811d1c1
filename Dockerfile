# Chitram's image: the wheel built from this repository and its locked dependencies, installed
# from a wheelhouse that `just build` prepares on the host. Nothing is downloaded during the
# build, so it builds where no package registry is reachable, with the classic builder too.
#
#   just build                                   # wheel + wheelhouse + this image
#   docker build --build-arg BASE_IMAGE=… .      # any Debian-like image with python3 (3.11+)

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS install
# The venv is made with the base image's own python3, so the runtime stage (same base) runs it.
COPY dist/wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/chitram \
    && /opt/chitram/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse \
        --requirement /tmp/wheelhouse/requirements.txt \
    && /opt/chitram/bin/pip install --no-cache-dir --no-index --no-deps /tmp/wheelhouse/chitram-*.whl \
    && /opt/chitram/bin/pip uninstall --yes pip \
    && find /opt/chitram -name '__pycache__' -prune -exec rm -rf {} + \
    && /opt/chitram/bin/python -m compileall -q /opt/chitram/lib

FROM ${BASE_IMAGE}
# A fixed numeric id (USER below uses it as a number, which hosts and orchestrators can resolve).
RUN groupadd --system --gid 10001 chitram \
    && useradd --system --uid 10001 --gid chitram --home-dir /var/lib/chitram --shell /usr/sbin/nologin chitram \
    && mkdir -p /var/lib/chitram /backups \
    && chown chitram:chitram /var/lib/chitram /backups
COPY --from=install /opt/chitram /opt/chitram

ENV PATH=/opt/chitram/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHITRAM_HOST=0.0.0.0 \
    CHITRAM_PORT=8000 \
    CHITRAM_WORKERS=1 \
    CHITRAM_DATA_DIR=/var/lib/chitram

USER 10001:10001
WORKDIR /var/lib/chitram
EXPOSE 8000

# Readiness, not liveness: Compose and the deploy script wait for the database, storage and
# Redis to answer through the app itself.
HEALTHCHECK --interval=10s --timeout=8s --start-period=30s --retries=3 \
    CMD ["chitram-admin", "health"]

CMD ["chitram"]
