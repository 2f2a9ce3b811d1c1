# Stand-in for dxflrs/garage (no registry is reachable here): moto's S3 server on :3900 and a
# stand-in of Garage's admin API v2 on :3903, behind the image's own `/garage` entry point.
# Built from the wheelhouse of moto and boto3 that the tests download on the host.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY s3-wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/s3 && /opt/s3/bin/pip install -q --no-index --find-links /tmp/wheelhouse "moto[server]" boto3 \
    && rm -rf /tmp/wheelhouse
COPY garage_admin.py /opt/s3/garage_admin.py
COPY garage-standin.py /opt/s3/garage.py
RUN printf '#!/bin/sh\nexec /opt/s3/bin/python /opt/s3/garage.py "$@"\n' > /garage && chmod +x /garage
ENV RUST_LOG=garage=info
CMD ["/garage", "server"]
