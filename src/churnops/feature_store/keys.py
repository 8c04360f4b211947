"""The feature store's key names (pure functions; the key space is in the package's docstring), the
allowed version names and the text form of a customer id."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from churnops.feature_store.errors import FeatureStoreError

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def current_key(namespace: str) -> str:
    return f"{namespace}:fs:current"


def lock_key(namespace: str) -> str:
    return f"{namespace}:fs:lock"


def registry_key(namespace: str) -> str:
    return f"{namespace}:fs:versions"


def versions_prefix(namespace: str) -> str:
    return f"{namespace}:fs:v:"


def version_prefix(namespace: str, version: str) -> str:
    return f"{namespace}:fs:v:{version}:"


def meta_key(namespace: str, version: str) -> str:
    return f"{namespace}:fs:v:{version}:meta"


def customer_key(namespace: str, version: str, customer_id: str) -> str:
    return f"{namespace}:fs:v:{version}:c:{customer_id}"


def ids_key(namespace: str, version: str, part: int = 0) -> str:
    return f"{namespace}:fs:v:{version}:ids:{part}"


def check_version(version: str) -> str:
    if not VERSION_PATTERN.match(version):
        raise FeatureStoreError(
            f"feature-set version {version!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit")
    return version


def normalise_id(customer_id: Any) -> str:
    """Customer ids are stored as text: 768805383 and "768805383" are the same customer."""
    if isinstance(customer_id, bool) or customer_id is None:
        raise FeatureStoreError(f"customer id must be a string or an integer, got {customer_id!r}")
    if isinstance(customer_id, (int, np.integer)):
        return str(int(customer_id))
    if isinstance(customer_id, bytes):
        return customer_id.decode()
    return str(customer_id)
