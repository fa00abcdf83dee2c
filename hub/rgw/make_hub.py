"""Make (or update) a hub bucket on an S3 server that takes bucket policies with user principals.

Usage, as the operator (the user who owns the bucket), with the usual AWS variables::

    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_ENDPOINT_URL=http://127.0.0.1:PORT \\
        python hub/rgw/make_hub.py sic-hub --publisher lab-a --publisher lab-b --reader reader

It creates the bucket when it is missing, refuses one with versioning enabled
(Ceph RGW ignores If-None-Match there; suspended is fine), and sets the bucket
policy from :func:`bucket_policy`: every named user may list the bucket and
read every object; each publisher may also write under ``<publisher>/`` and
nowhere else. Nobody but the owner may delete. The owner itself reads the
publishers' objects only if named (an object belongs to its uploader). Users
are made by the server's own tool first (``radosgw-admin user create`` on Ceph
RGW). Run it again with the whole list to add a user: the policy is replaced,
not merged. ``--print`` shows the policy instead of setting it.

Written for Ceph RGW (checked on 16.2 Pacific), where principals are
``arn:aws:iam:::user/NAME`` (``arn:aws:iam::TENANT:user/NAME`` in a tenant).
Uses botocore only, which every sic-share install has (s3fs needs it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["bucket_policy", "main", "make_hub"]

# What every hub user needs to read a hub: list, get, and (for publish's check that the bucket is
# not versioned, where Ceph RGW ignores If-None-Match) the versioning status.
_READ_BUCKET = ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketVersioning"]
# A publisher writes only under its own prefix. PutObject covers multipart uploads; s3fs aborts a
# failed one, which is its own action.
_WRITE_PREFIX = ["s3:PutObject", "s3:AbortMultipartUpload"]


def _principal(user: str, tenant: str) -> str:
    return f"arn:aws:iam::{tenant}:user/{user}"


def bucket_policy(bucket: str, publishers: list[str], readers: list[str], *, tenant: str = "") -> dict:
    """The hub's bucket policy: all users read; each publisher writes under ``<publisher>/`` only."""
    users = list(dict.fromkeys([*publishers, *readers]))
    if not users:
        raise ValueError("name at least one --publisher or --reader")
    statements = [
        {
            "Sid": "hub-users-read",
            "Effect": "Allow",
            "Principal": {"AWS": [_principal(u, tenant) for u in users]},
            "Action": ["s3:GetObject", *_READ_BUCKET],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        }
    ]
    for publisher in dict.fromkeys(publishers):
        statements.append({
            "Sid": f"publish-{publisher}",
            "Effect": "Allow",
            "Principal": {"AWS": [_principal(publisher, tenant)]},
            "Action": list(_WRITE_PREFIX),
            "Resource": [f"arn:aws:s3:::{bucket}/{publisher}/*"],
        })
    return {"Version": "2012-10-17", "Statement": statements}


def make_hub(client, bucket: str, publishers: list[str], readers: list[str], *, tenant: str = "") -> str:
    """Create ``bucket`` if missing, refuse a versioned one, set the hub policy; returns a summary line.

    ``client`` is a botocore (or boto3) S3 client acting as the bucket's owner.
    """
    from botocore.exceptions import ClientError

    policy = bucket_policy(bucket, publishers, readers, tenant=tenant)
    try:
        client.head_bucket(Bucket=bucket)
        made = "kept"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
        client.create_bucket(Bucket=bucket)
        made = "created"
    if client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled":
        # Suspended is fine: RGW honours If-None-Match again (measured on 16.2).
        raise ValueError(
            f"bucket {bucket} has versioning enabled, where Ceph RGW ignores If-None-Match and a published version "
            f"could be overwritten: suspend it (put-bucket-versioning Status=Suspended) or use another bucket"
        )
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return (f"bucket {bucket} {made}, versioning not enabled; publishers {', '.join(publishers) or '(none)'} write under "
            f"their own prefix; {', '.join(readers) or 'no other users'} read")


def _client():
    import botocore.session

    session = botocore.session.get_session()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # botocore reads AWS_ENDPOINT_URL itself; passing it keeps older botocore releases working too.
    return session.create_client("s3", region_name=region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("bucket")
    parser.add_argument("--publisher", action="append", default=[], metavar="USER",
                        help="a user who may write under USER/ (repeatable); the publisher name is the user name")
    parser.add_argument("--reader", action="append", default=[], metavar="USER", help="a read-only user (repeatable)")
    parser.add_argument("--tenant", default="", help="the users' RGW tenant (default: none)")
    parser.add_argument("--print", action="store_true", help="print the bucket policy and change nothing")
    args = parser.parse_args(argv)
    try:
        if args.print:
            print(json.dumps(bucket_policy(args.bucket, args.publisher, args.reader, tenant=args.tenant), indent=2))
            return 0
        print(make_hub(_client(), args.bucket, args.publisher, args.reader, tenant=args.tenant))
    except Exception as exc:  # noqa: BLE001 - an operator's tool: one line, not a traceback
        print(f"error: {_one_line(exc, args.bucket)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: Exception, bucket: str) -> str:
    """What went wrong and what to do, for the errors an operator meets."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    endpoint = os.environ.get("AWS_ENDPOINT_URL", "the S3 endpoint")
    if isinstance(exc, NoCredentialsError):
        return ("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the bucket owner's keys "
                "(radosgw-admin user info --uid OWNER)")
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach {endpoint}: check AWS_ENDPOINT_URL (hub/rgw/start.sh prints it)"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code") or "?"
        if code == "InvalidBucketName":
            return f"{bucket!r} is not a valid bucket name: use 3-63 lower-case letters, digits, dots and hyphens"
        if code in ("403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"):
            return (f"{endpoint} refused {exc.operation_name} on bucket {bucket} ({code}): run this as the bucket's "
                    "owner, with its AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        return f"{endpoint} refused {exc.operation_name} on bucket {bucket} ({code})"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
