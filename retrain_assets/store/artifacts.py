"""Content-addressed, write-once artifact store (models, datasets, drift profiles).

Why content addressing: a key *is* the sha256 of its bytes, so an artifact can never be overwritten in
place, two runs producing the same bytes share one file, and a reader can always verify what it got.
Loading a model verifies the checksum before unpickling: a corrupt or tampered file is refused with a
clear error instead of being executed.

The root is a local folder (default; a shared volume beyond one machine) or any fsspec URL, e.g.
``s3://bucket/retrain`` or ``gs://bucket/retrain`` with that filesystem's package installed (s3fs, gcsfs):
steps and runs on different machines then share artifacts through the object store. Local writes go to a
temporary file renamed into place; object stores write a whole object at once. Either way readers never
see half an artifact, and every read is verified against the registry's checksum.
"""

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

from retrain_assets.errors import StoreError


@dataclass(frozen=True)
class ArtifactRef:
    key: str
    sha256: str
    size_bytes: int


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    def __init__(self, root: str | os.PathLike):
        root = str(root)
        self.remote = "://" in root and not root.startswith("file://")
        if self.remote:
            import fsspec  # installed with Dagster (universal-pathlib); only object-store roots need it

            try:
                self.fs, self.base = fsspec.core.url_to_fs(root)
            except (ImportError, ValueError) as error:
                raise StoreError(
                    f"artifact root {root!r} cannot be opened: {error}. Install the filesystem of its scheme "
                    "(s3:// needs s3fs, gs:// gcsfs, az:// adlfs) or use a local folder"
                ) from None
            self.root = root.rstrip("/")
        else:
            self.root = Path(root.removeprefix("file://"))

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"artifact key {key!r} points outside the artifact root {self.root}")
        return path

    def _object(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise StoreError(f"artifact key {key!r} points outside the artifact root {self.root}")
        return f"{self.base.rstrip('/')}/{key}"

    def path_of(self, key: str) -> str:
        """Where an artifact lives (for links in the UI; read it through get_bytes, which verifies it)."""
        return f"{self.root}/{key}" if self.remote else str(self._path(key))

    def uri_of(self, key: str) -> str:
        """The artifact's URI (``file://`` locally, the object store's own scheme otherwise): Dagster's
        ``dagster/uri`` metadata, which the catalog shows."""
        return f"{self.root}/{key}" if self.remote else self._path(key).as_uri()

    def _holds(self, key: str, data: bytes, digest: str) -> bool:
        """Whether the artifact is already stored whole. Locally its bytes are checked (cheap); an object
        store is asked for its size only (objects are written whole; reads verify the checksum anyway)."""
        if self.remote:
            try:
                return self.fs.size(self._object(key)) == len(data)
            except FileNotFoundError:
                return False
        existing = self._read(key)
        return existing is not None and sha256_bytes(existing) == digest

    def _read(self, key: str) -> bytes | None:
        """The stored bytes, or None when there is no such artifact."""
        if self.remote:
            try:
                return self.fs.cat_file(self._object(key))
            except FileNotFoundError:
                return None
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def _write(self, key: str, data: bytes) -> None:
        if self.remote:
            self.fs.pipe_file(self._object(key), data)  # one object, written whole
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file in the same folder, then rename: readers never see half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)

    def put_bytes(self, data: bytes, suffix: str) -> ArtifactRef:
        digest = sha256_bytes(data)
        key = f"sha256/{digest[:2]}/{digest}{suffix}"
        if not self._holds(key, data, digest):
            self._write(key, data)
        return ArtifactRef(key, digest, len(data))

    def get_bytes(self, key: str, expected_sha256: str) -> bytes:
        data = self._read(key)
        if data is None:
            raise StoreError(
                f"artifact {key} is missing from {self.root}: restore the artifact store "
                "(RETRAIN_ARTIFACT_ROOT) or retrain the model"
            )
        actual = sha256_bytes(data)
        if actual != expected_sha256:
            raise StoreError(
                f"artifact {key} is corrupt or was modified: sha256 {actual[:12]}... does not match the "
                f"registry's {expected_sha256[:12]}...; it was not loaded. Restore the file from backup or "
                "retrain; the current production model keeps serving"
            )
        return data

    # Typed helpers -------------------------------------------------------------------------------------
    def put_model(self, model: Any) -> ArtifactRef:
        buffer = io.BytesIO()
        joblib.dump(model, buffer, compress=3)
        return self.put_bytes(buffer.getvalue(), ".joblib")

    def load_model(self, key: str, expected_sha256: str) -> Any:
        """Unpickle only after the checksum matched the registry."""
        data = self.get_bytes(key, expected_sha256)
        return joblib.load(io.BytesIO(data))

    def put_frame(self, frame: pd.DataFrame) -> ArtifactRef:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return self.put_bytes(buffer.getvalue(), ".parquet")

    def load_frame(self, key: str, expected_sha256: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.get_bytes(key, expected_sha256)))

    def put_text(self, text: str, suffix: str) -> ArtifactRef:
        return self.put_bytes(text.encode("utf-8"), suffix)

    def load_text(self, key: str, expected_sha256: str) -> str:
        return self.get_bytes(key, expected_sha256).decode("utf-8")
