"""`minio server DIR`: moto's S3 server on port 9000 (state in memory; DIR is accepted and unused)."""

import sys

from moto.server import main

if sys.argv[1:2] != ["server"]:
    sys.exit(f"minio stand-in: only `minio server DIR` is supported, not {sys.argv[1:]}")
main(["--host", "0.0.0.0", "--port", "9000"])
