"""What ``celery-ecs deploy`` uploads, under content-addressed S3 keys, and the upload itself.

Keys (``sha256`` is of the bytes, so a changed file is a new key and an unchanged one is not
uploaded again; CloudFormation sees a new ``S3Key`` exactly when the code changed)::

    celery-ecs/lambdas/<name>-<sha256>.zip
    celery-ecs/templates/<sha256 of the tree>/infrastructure/vpc.yaml ...   (TemplateURLPrefix)
    celery-ecs/root/<sha256>.yaml                                        (the rendered master)

The nested templates share one prefix because the root stack names them as
``${TemplateURLPrefix}/infrastructure/vpc.yaml``: the prefix is the hash of the whole tree (every
path with the hash of its bytes), so changing one template moves all of them to a new prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any, Literal
from urllib.parse import urlparse

from toolkit.errors import ConfigError, aws_error_code

KEY_ROOT = "celery-ecs"
NESTED_FOLDERS = ("infrastructure", "services")


@dataclass(frozen=True)
class Artifact:
    key: str
    body: bytes = b""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lambda_artifact(name: str, data: bytes) -> Artifact:
    return Artifact(f"{KEY_ROOT}/lambdas/{name}-{sha256(data)}.zip", data)


def root_artifact(template: str) -> Artifact:
    data = template.encode()
    return Artifact(f"{KEY_ROOT}/root/{sha256(data)}.yaml", data)


def nested_templates(folder: Traversable) -> dict[str, bytes]:
    """``infrastructure/*.yaml`` and ``services/**.yaml`` under ``folder``, by relative path."""
    found: dict[str, bytes] = {}

    def visit(node: Traversable, rel: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            path = f"{rel}/{child.name}"
            if child.is_dir():
                visit(child, path)
            elif child.name.endswith(".yaml"):
                found[path] = child.read_bytes()

    for name in NESTED_FOLDERS:
        sub = folder / name
        if not sub.is_dir():
            raise ConfigError(f"template folder {name}/ is missing from {folder}")
        visit(sub, name)
    return found


def template_prefix(files: Mapping[str, bytes]) -> str:
    """The content-addressed folder of a template tree (hash of each path and its bytes)."""
    manifest = "".join(f"{path}\0{sha256(files[path])}\n" for path in sorted(files))
    return f"{KEY_ROOT}/templates/{sha256(manifest.encode())}"


def template_artifacts(files: Mapping[str, bytes]) -> tuple[str, list[Artifact]]:
    prefix = template_prefix(files)
    return prefix, [Artifact(f"{prefix}/{path}", files[path]) for path in sorted(files)]


def url_suffix(region: str) -> str:
    """The DNS suffix of ``region``'s partition: ``amazonaws.com``, ``amazonaws.com.cn`` (aws-cn),
    ... as botocore's partition data (the SDKs' endpoint rules) says."""
    import boto3
    from botocore.loaders import Loader

    partition = boto3.session.Session().get_partition_for_region(region)
    for entry in Loader().load_data("partitions")["partitions"]:
        if entry["id"] == partition:
            return str(entry["outputs"]["dnsSuffix"])
    return "amazonaws.com"


def s3_url(bucket: str, region: str, key: str) -> str:
    """The virtual-hosted HTTPS URL CloudFormation reads a template from, in the region's
    partition (``https://B.s3.cn-north-1.amazonaws.com.cn/...`` in aws-cn)."""
    return f"https://{bucket}.s3.{region}.{url_suffix(region)}/{key}"


def check_bucket(s3: Any, bucket: str, region: str | None = None) -> None:
    """One-line :class:`ConfigError` when the bucket is missing, not ours to read, or (with
    ``region``) in another region: Lambda reads its code only from a bucket in its own region."""
    try:
        reply = s3.head_bucket(Bucket=bucket)
    except Exception as exc:  # botocore ClientError; classified by its code
        code = aws_error_code(exc)
        if code in {"404", "NoSuchBucket", "NotFound"}:
            raise ConfigError(f"bucket {bucket} does not exist (create it in this region first)")\
                from None
        if code in {"403", "AccessDenied", "Forbidden"}:
            raise ConfigError(f"bucket {bucket}: access denied") from None
        raise
    headers = reply.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    located = reply.get("BucketRegion") or headers.get("x-amz-bucket-region")
    if region and located and located != region:
        raise ConfigError(
            f"bucket {bucket} is in {located}, the stack in {region}: Lambda reads its code only "
            f"from a bucket in the function's region (use a bucket in {region}, or deploy to "
            f"{located} with AWS_REGION={located})")


UploadState = Literal["uploaded", "present"]


def upload(s3: Any, bucket: str, artifacts: Iterable[Artifact]) -> list[tuple[str, UploadState]]:
    """Put every artifact whose key is not in the bucket yet (same key = same bytes)."""
    done: list[tuple[str, UploadState]] = []
    for artifact in artifacts:
        try:
            s3.head_object(Bucket=bucket, Key=artifact.key)
            done.append((artifact.key, "present"))
            continue
        except Exception as exc:
            if aws_error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
                raise
        s3.put_object(
            Bucket=bucket, Key=artifact.key, Body=artifact.body,
            ChecksumSHA256=_b64_sha256(artifact.body),
        )
        done.append((artifact.key, "uploaded"))
    return done


def _b64_sha256(data: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def broker_url_has_password(url: str) -> bool:
    try:
        return bool(urlparse(url).password)
    except ValueError:
        return True  # unparseable: assume the worst
