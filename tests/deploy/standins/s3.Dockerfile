# Stand-in for the minio/minio and minio/mc images (no MinIO binary is reachable here): moto's
# S3 server behind a `minio` command, and an `mc` command for the subcommands the stack uses.
# Built from a wheelhouse of moto and boto3 that the tests download on the host.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY s3-wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/s3 && /opt/s3/bin/pip install -q --no-index --find-links /tmp/wheelhouse "moto[server]" boto3 \
    && rm -rf /tmp/wheelhouse
COPY minio-standin.py /opt/s3/minio.py
COPY mc-standin.py /opt/s3/mc.py
RUN printf '#!/bin/sh\nexec /opt/s3/bin/python /opt/s3/minio.py "$@"\n' > /usr/local/bin/minio \
    && printf '#!/bin/sh\nexec /opt/s3/bin/python /opt/s3/mc.py "$@"\n' > /usr/local/bin/mc \
    && chmod +x /usr/local/bin/minio /usr/local/bin/mc && mkdir -p /data
ENTRYPOINT ["minio"]
