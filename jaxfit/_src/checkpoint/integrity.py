"""What detects a damaged checkpoint: the format's names, digests, and the checks.

Once every shard is on disk, ``metadata.json`` records ``digest.files``, the
sha256 of every file under ``state/`` and ``extra/``, and ``digest.metadata``, the
sha256 of its own content (canonical JSON, without that field), so an edited
position or seed is detected as well as damaged or swapped arrays. ``verify``
checks both, and the metadata's own fields, before orbax reads anything; a
damaged checkpoint raises ``CheckpointCorrupted``, one line naming the file. A
checkpoint without ``digest`` (written before it existed) is checked for its
fields only (the format is still ``jaxfit-checkpoint/1``; ``digest`` is optional
in it). The functions here take a path ``orbax_io.checked_path`` has checked.
Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

FORMAT = "jaxfit-checkpoint/1"
STATE = "state"
EXTRA = "extra"
METADATA = "metadata.json"
DIGEST = "sha256"
_CHUNK = 1 << 20  # bytes read at a time when hashing


class CheckpointCorrupted(ValueError):
    """A checkpoint's files do not match what it recorded: one line naming the file.

    Attributes:
      path: the checkpoint directory.
      file: the damaged (or missing) file or directory.
      problem: what is wrong with it, in words.
    """

    def __init__(self, path: str, file: str, problem: str, argname: str = "path"):
        self.path, self.file, self.problem = path, file, problem
        super().__init__(
            f"{argname}: the checkpoint {path!r} is damaged: {file!r} {problem}. "
            "Nothing was restored from it."
        )


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: str, items: list[str]) -> list[str]:
    """Every file under ``root/<item>``, as sorted '/'-separated relative paths."""
    found = []
    for item in items:
        top = os.path.join(root, item)
        for directory, subdirs, names in os.walk(top):
            subdirs.sort()
            for name in names:
                full = os.path.join(directory, name)
                found.append(os.path.relpath(full, root).replace(os.sep, "/"))
    return sorted(found)


def file_digests(root: str, info: dict[str, Any]) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under the checkpoint's items."""
    items = [item for item in info["contents"] if item in (STATE, EXTRA)]
    return {rel: _hash_file(os.path.join(root, rel)) for rel in _files(root, items)}


def _canonical_digest(info: dict[str, Any]) -> str:
    """sha256 of ``info`` as canonical JSON, without ``digest.metadata``."""
    body = dict(info)
    digest = dict(body.get("digest") or {})
    digest.pop("metadata", None)
    body["digest"] = digest
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def metadata_text(info: dict[str, Any]) -> str:
    """metadata.json's text, with the digest of its own content added. The
    digest is taken of the JSON read back, exactly what a reader will see."""
    stored = json.loads(json.dumps(info))
    stored["digest"]["metadata"] = _canonical_digest(stored)
    return json.dumps(stored, indent=2)


def read_info(path: str, argname: str = "path") -> dict[str, Any]:
    """The checkpoint's ``metadata.json``, parsed (not checked against its digest:
    see ``verify``).

    Raises:
      FileNotFoundError: as ``checked_path``.
      CheckpointCorrupted: ``metadata.json`` is not a JSON object.
    """
    metadata = os.path.join(path, METADATA)
    try:
        with open(metadata, "rb") as f:
            info = json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointCorrupted(
            path, metadata, f"is not UTF-8 text ({error.reason})", argname
        ) from None
    except json.JSONDecodeError as error:
        raise CheckpointCorrupted(
            path, metadata, f"is not valid JSON ({error})", argname
        ) from None
    if not isinstance(info, dict):
        raise CheckpointCorrupted(path, metadata, "is not a JSON object", argname)
    return info


_FIELDS: dict[str, Any] = {  # metadata.json's fields and their JSON types
    "format": str,
    "contents": list,
    "weights_only": bool,
    "step": int,
    "metadata": dict,
}
_RUN_FIELDS: dict[str, Any] = {"seed": int, "position": dict, "callbacks": dict}
_POSITION: dict[str, Any] = {"epoch": int, "batch": int, "stopped": bool}


def _check_fields(path: str, info: dict[str, Any], argname: str) -> None:
    metadata = os.path.join(path, METADATA)

    def check(where: dict[str, Any], fields: dict[str, Any], prefix: str) -> None:
        for key, kind in fields.items():
            value = where.get(key)
            wrong = isinstance(value, bool) and kind is int
            if not isinstance(value, kind) or wrong:
                raise CheckpointCorrupted(
                    path,
                    metadata,
                    f"has no valid {prefix}{key!r} (a JSON {kind.__name__} expected)",
                    argname,
                )

    check(info, _FIELDS, "")
    if not info["format"].startswith("jaxfit-checkpoint/"):
        raise CheckpointCorrupted(
            path, metadata, f"has the format {info['format']!r}", argname
        )
    if info["format"] != FORMAT:
        raise ValueError(
            f"{argname}: the checkpoint {path!r} has the format "
            f"{info['format']!r}, newer than this jaxfit reads ({FORMAT!r}). "
            "Upgrade jaxfit to read it."
        )
    if STATE not in info["contents"] or not set(info["contents"]) <= {STATE, EXTRA}:
        raise CheckpointCorrupted(
            path, metadata, f"lists the contents {info['contents']!r}", argname
        )
    if not info["weights_only"]:
        check(info, _RUN_FIELDS, "")
        check(info["position"], _POSITION, "position.")


def verify(path: str, argname: str = "path") -> dict[str, Any]:
    """Checks the checkpoint at ``path`` before anything of it is read by orbax;
    returns its metadata.

    Checked: ``metadata.json`` parses, matches the digest of its own content and
    has every field a restore reads; every file under ``state/`` and ``extra/``
    is there, matches its recorded digest, and no file was added. A checkpoint
    written before digests existed is checked for its fields only.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      CheckpointCorrupted: the first damaged file, in one line.
      ValueError: a newer checkpoint format than this jaxfit reads.
    """
    info = read_info(path, argname)
    metadata = os.path.join(path, METADATA)
    digest = info.get("digest")
    if digest is not None:
        if not (
            isinstance(digest, dict)
            and digest.get("algorithm") == DIGEST
            and isinstance(digest.get("files"), dict)
            and isinstance(digest.get("metadata"), str)
        ):
            raise CheckpointCorrupted(
                path, metadata, "has a damaged 'digest' field", argname
            )
        if _canonical_digest(info) != digest["metadata"]:
            raise CheckpointCorrupted(
                path,
                metadata,
                "does not match the digest of its content it recorded (edited "
                "or damaged after it was written)",
                argname,
            )
    _check_fields(path, info, argname)
    for item in info["contents"]:
        if not os.path.isdir(os.path.join(path, item)):
            raise CheckpointCorrupted(
                path, os.path.join(path, item), "is missing", argname
            )
    if digest is None:
        return info  # written before digests: not checked
    recorded: dict[str, Any] = digest["files"]
    present = _files(path, info["contents"])
    for rel in sorted(set(recorded) | set(present)):
        file = os.path.join(path, *rel.split("/"))
        if rel not in present:
            problem = "is missing (metadata.json records it)"
        elif rel not in recorded:
            problem = "is not part of the checkpoint as it was written"
        elif _hash_file(file) != recorded[rel]:
            problem = (
                "does not match the digest recorded in metadata.json (damaged, or "
                "copied from another checkpoint)"
            )
        else:
            continue
        raise CheckpointCorrupted(path, file, problem, argname)
    return info
