#!/bin/sh
# One-shot MinIO setup, run by the `minio-init` service with MinIO's root credentials:
# the bucket (private), and the app's own user, allowed only that bucket's objects.
# Safe to run again: every step is idempotent.
set -eu

mc alias set chitram http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "chitram/$S3_BUCKET"
mc anonymous set none "chitram/$S3_BUCKET"

policy=/tmp/chitram-app-policy.json
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::$S3_BUCKET"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": ["arn:aws:s3:::$S3_BUCKET/*"]}
  ]
}
JSON
mc admin policy create chitram chitram-app "$policy"
mc admin user add chitram "$APP_ACCESS_KEY" "$APP_SECRET_KEY"
mc admin policy attach chitram chitram-app --user "$APP_ACCESS_KEY" 2>/dev/null || true
echo "bucket $S3_BUCKET is private; user $APP_ACCESS_KEY may use its objects and nothing else"
