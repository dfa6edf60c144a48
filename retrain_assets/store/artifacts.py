"""Content-addressed, write-once artifact store (models, datasets, drift profiles).

Why content addressing: a key *is* the sha256 of its bytes, so an artifact can never be overwritten in
place, two runs producing the same bytes share one file, and a reader can always verify what it got.
Loading a model verifies the checksum before unpickling: a corrupt or tampered file is refused with a
clear error instead of being executed.

The default backend is a local folder; the interface (``put_bytes`` / ``get_bytes``) is all the rest of the
code uses, so another backend (object storage) only has to provide those two.
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
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise StoreError(f"artifact key {key!r} points outside the artifact root {self.root}")
        return path

    def path_of(self, key: str) -> Path:
        """Where an artifact lives (for links in the UI; read it through get_bytes, which verifies it)."""
        return self._path(key)

    def put_bytes(self, data: bytes, suffix: str) -> ArtifactRef:
        digest = sha256_bytes(data)
        key = f"sha256/{digest[:2]}/{digest}{suffix}"
        path = self._path(key)
        if path.exists() and sha256_bytes(path.read_bytes()) == digest:
            return ArtifactRef(key, digest, len(data))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file in the same folder, then rename: readers never see half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
        return ArtifactRef(key, digest, len(data))

    def get_bytes(self, key: str, expected_sha256: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise StoreError(
                f"artifact {key} is missing from {self.root}: restore the artifact folder "
                "(RETRAIN_ARTIFACT_ROOT) or retrain the model"
            )
        data = path.read_bytes()
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
