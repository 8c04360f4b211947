"""SHA-256 digests of model files: recorded when a model is logged and registered, checked before loading.

A model's digest covers every file of its MLflow model folder (``MLmodel``, the environment files, the
input example and the churnops model data): :func:`file_digests` maps each relative path to the SHA-256
of its bytes, and :func:`manifest_digest` is the SHA-256 of that sorted list. Training records both on
the candidate's run; :func:`churnops.registry.register` checks the stored files against them and copies
them to the model version's tags ``model_sha256`` / ``model_files``; serving and batch scoring download a
version, :func:`verify` the downloaded folder against its tags, and load only then, from that same folder
(nothing is read twice, so nothing can change between the check and the load).

The only file left out is MLflow's own ``registered_model_meta`` (name and version, written into the
folder when a version is registered, never read by churnops). Any other changed, missing or added file is a
mismatch: :class:`IntegrityError` names them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

# written by MLflow into the model folder at registration (after the digests were taken); never loaded
NOT_COVERED = frozenset({"registered_model_meta"})
_CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """Model files differ from the digests recorded for them: they were not loaded."""

    def __init__(self, message: str, *, expected: str | None = None, actual: str | None = None,
                 problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        self.problems = problems


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(folder: Path | str) -> dict[str, str]:
    """relative POSIX path -> SHA-256 of every regular file under `folder` (sorted; see NOT_COVERED)."""
    root = Path(folder)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel in NOT_COVERED or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            out[rel] = "not-a-regular-file"  # never matches a digest: a link or device is a mismatch
            continue
        out[rel] = sha256_file(path)
    return out


def manifest_digest(files: Mapping[str, str]) -> str:
    """One SHA-256 for a whole folder: of the sorted ``<sha256>  <path>`` lines (as sha256sum prints)."""
    lines = "".join(f"{files[p]}  {p}\n" for p in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def encode_files(files: Mapping[str, str]) -> str:
    """The per-file digests as a compact JSON tag value."""
    return json.dumps(dict(sorted(files.items())), separators=(",", ":"))


def decode_files(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else None


def verify(folder: Path | str, expected: str, expected_files: Mapping[str, str] | None, *, what: str) -> str:
    """Check `folder` against the recorded digest; returns it. IntegrityError names what differs."""
    files = file_digests(folder)
    actual = manifest_digest(files)
    if actual == expected:
        return actual
    problems: list[str] = []
    if expected_files is not None:
        for path in sorted(set(expected_files) | set(files)):
            if path not in files:
                problems.append(f"{path} is missing")
            elif path not in expected_files:
                problems.append(f"{path} was added")
            elif files[path] != expected_files[path]:
                problems.append(f"{path} changed")
    detail = "; ".join(problems) if problems else "the files differ from the recorded list"
    raise IntegrityError(
        f"{what}: model files do not match the SHA-256 recorded at registration ({detail}; expected "
        f"{expected[:16]}…, found {actual[:16]}…): refused, nothing from them was loaded",
        expected=expected, actual=actual, problems=tuple(problems))
