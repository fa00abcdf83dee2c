"""A local S3 hub for development and tests: moto's server on loopback, authentication enforced.

Usage::

    python hub/dev_server.py --publisher lab-a --publisher lab-b      # prints `export` lines
    python hub/dev_server.py --publisher lab-a --json --port 5055     # prints JSON instead

It creates one bucket (``sic-hub`` by default), one IAM user per publisher whose
policy allows ``s3:PutObject``/``s3:GetObject`` only on ``<bucket>/<publisher>/*``
(and ``s3:ListBucket`` on the bucket), and a ``reader`` user with read-only
access (``s3:GetObject`` on ``<bucket>/*``, ``s3:ListBucket``). Then it serves
until Ctrl-C.

moto checks SigV4 signatures and IAM user policies only when
``INITIAL_NO_AUTH_ACTION_COUNT`` is set before moto is imported: the first N
requests are free. ``main`` sets it before importing moto; ``start_dev_hub``
also sets moto's setting directly (so it works when moto was imported first):
free requests for its own setup, then enforcement on every later request,
restored to what it was by ``server.stop()``. moto's IAM check is not given S3
condition keys such as ``s3:prefix``, so the ``ListBucket`` grant is not
narrowed to a prefix here; on AWS/MinIO add ``"Condition": {"StringLike":
{"s3:prefix": ["<publisher>/*"]}}``. The moto state is global to the process:
run one dev hub per process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading

__all__ = ["start_dev_hub", "main", "READER"]

READER = "reader"
REGION = "us-east-1"
# moto's setup credentials: any key works while requests are still free.
_SETUP_KEY = ("setup", "setup")


def _publisher_policy(bucket: str, publisher: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{publisher}/*"],
            },
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"]},
        ],
    }


def _reader_policy(bucket: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"]},
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"]},
        ],
    }


def start_dev_hub(publishers, bucket: str = "sic-hub", port: int = 0):
    """Start moto on 127.0.0.1 with a bucket, per-publisher users and a reader; enforce auth.

    Returns ``(server, endpoint, credentials)``: the started ``ThreadedMotoServer``
    (call ``server.stop()``), ``http://127.0.0.1:PORT``, and
    ``{user: (access_key_id, secret_access_key)}`` for each publisher and ``"reader"``.
    """
    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    publishers = list(publishers)
    if READER in publishers:
        raise ValueError(f"{READER!r} is the read-only user; choose another publisher name")

    # werkzeug logs every request to stderr; keep the dev hub quiet (tests capture stderr).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # Free requests while we set up, whatever moto was imported with; restored by server.stop().
    previous = (settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count)
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stop = server.stop

    def stop_and_restore() -> None:
        try:
            stop()
        finally:
            settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = previous

    server.stop = stop_and_restore
    host, bound = server.get_host_and_port()
    endpoint = f"http://{host}:{bound}"
    try:
        session = boto3.session.Session(
            aws_access_key_id=_SETUP_KEY[0], aws_secret_access_key=_SETUP_KEY[1], region_name=REGION
        )
        s3 = session.client("s3", endpoint_url=endpoint)
        iam = session.client("iam", endpoint_url=endpoint)
        s3.create_bucket(Bucket=bucket)
        credentials: dict[str, tuple[str, str]] = {}
        policies = {p: _publisher_policy(bucket, p) for p in publishers}
        policies[READER] = _reader_policy(bucket)
        for user, policy in policies.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=f"sic-hub-{user}", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            credentials[user] = (key["AccessKeyId"], key["SecretAccessKey"])
    except BaseException:
        server.stop()
        raise
    # From now on every request must be signed by a known key and allowed by its policy.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    return server, endpoint, credentials


def _exports(endpoint: str, bucket: str, credentials: dict[str, tuple[str, str]]) -> str:
    lines = [
        f"export AWS_ENDPOINT_URL={shlex.quote(endpoint)}",
        f"export AWS_DEFAULT_REGION={REGION}",
        f"export SIC_SHARE_HUB={shlex.quote(f's3://{bucket}/')}",
    ]
    for user, (key_id, secret) in credentials.items():
        lines.append(f"# as {user}:")
        lines.append(f"#   export AWS_ACCESS_KEY_ID={shlex.quote(key_id)} AWS_SECRET_ACCESS_KEY={shlex.quote(secret)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--publisher", action="append", default=[], metavar="NAME",
                        help="a publisher allowed to write under NAME/ (repeatable)")
    parser.add_argument("--bucket", default="sic-hub")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--json", action="store_true", help="print endpoint and keys as JSON")
    args = parser.parse_args(argv)
    # The documented switch, set before moto is imported (moto.settings reads it once); start_dev_hub
    # then lets its own setup requests through and enforces authentication on every later request.
    os.environ.setdefault("INITIAL_NO_AUTH_ACTION_COUNT", "0")
    try:
        server, endpoint, credentials = start_dev_hub(args.publisher, bucket=args.bucket, port=args.port)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({
            "endpoint": endpoint,
            "region": REGION,
            "bucket": args.bucket,
            "hub": f"s3://{args.bucket}/",
            "credentials": {u: {"access_key_id": k, "secret_access_key": s} for u, (k, s) in credentials.items()},
        }, indent=2))
    else:
        print(_exports(endpoint, args.bucket, credentials))
    sys.stdout.flush()
    print("serving; Ctrl-C to stop", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
