"""VEIL_S3_BUCKET puts photos in an S3-compatible bucket (django-storages), privately.

S3 cannot be reached from here, so the bucket is moto's in-process S3; everything above the
S3 API (settings, django-storages, the ACL and overwrite policy) is the real code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import json
import boto3
import django
from moto import mock_aws

with mock_aws():
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="family-photos", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    django.setup()
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    first = default_storage.save("photos/a/1.jpg", ContentFile(b"anonymized pixels"))
    second = default_storage.save("photos/a/1.jpg", ContentFile(b"another photo"))
    grants = s3.get_object_acl(Bucket="family-photos", Key=first)["Grants"]
    print(json.dumps({
        "backend": type(default_storage._wrapped).__name__,
        "names": [first, second],
        "read": default_storage.open(first).read().decode(),
        "public": any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants),
        "keys": sorted(o["Key"] for o in s3.list_objects_v2(Bucket="family-photos")["Contents"]),
    }))
"""


def test_photos_go_to_a_private_bucket_when_one_is_configured() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "VEIL_S3_BUCKET": "family-photos",
        "AWS_S3_REGION_NAME": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "S3Storage"
    assert result["read"] == "anonymized pixels"
    assert result["names"][0] != result["names"][1]  # a second photo never overwrites the first
    assert result["keys"] == sorted(result["names"]) and not result["public"]
