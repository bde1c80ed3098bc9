"""The retrieval score the service computes for each candidate, reproduced offline.

The uplift model may read a ``retrieval`` input section (docs/models-format.md) holding one
numeric feature, ``retrieval_score``: the inner product of the L2-normalised query embedding and
the candidate's row of the bundle's ``offer_embeddings.npy`` -- the FAISS inner-product score.
The query is the user tower's output over the request's user features and context, normalised
(``models.user_tower``); a bundle without a user tower uses the user's stored embedding
(``users.jsonl``). Offline the score must be computed with *exactly* the embeddings the bundle
will carry, so this module reads them from where the bundle gets them:

* a ``train`` output directory (``offer_embeddings.npy`` + the user tower of
  ``user_tower_manifest_fragment.json``; ``offline export --embeddings-from DIR --models-from
  DIR`` puts both into the bundle), or
* a bundle directory (``MANIFEST.json``, ``offer_embeddings.npy``, ``models.user_tower`` when
  present; otherwise the stored embeddings of its ``users.jsonl``, which must then be given).

:func:`RetrievalEmbeddings.fingerprint` identifies the embeddings; the uplift export records it
in its manifest fragment and ``offline export`` refuses to merge the model into a bundle whose
offer embeddings or user tower differ.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from offline import common

FEATURE = "retrieval_score"
SECTION = "retrieval"
TOWER_FRAGMENT = "user_tower_manifest_fragment.json"


def unit_rows32(x: np.ndarray) -> np.ndarray:
    """float32 rows of unit L2 norm (norm computed in float64); all-zero rows stay 0."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def bundle_offer_embeddings(raw: np.ndarray) -> np.ndarray:
    """The float32 array ``offline export`` writes as ``offer_embeddings.npy`` from a raw
    ``[offers, D]`` embedding matrix: rows normalised in float64, cast to float32, normalised
    again in float32 (the service's index holds exactly these numbers)."""
    x = np.asarray(raw, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out = (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def array_sha256(arr: np.ndarray) -> str:
    """sha256 of a float32 little-endian C-order array's bytes and its shape."""
    a = np.ascontiguousarray(arr, dtype="<f4")
    h = hashlib.sha256(json.dumps(list(a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def tower_sha256(layers: Sequence[Any], context_features: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of a user tower: its context section and every layer's weights and activation."""
    h = hashlib.sha256(json.dumps(list(context_features), sort_keys=True, separators=(",", ":")).encode())
    for layer in layers:
        h.update(layer.activation.encode())
        h.update(array_sha256(layer.weight).encode())
        h.update(array_sha256(layer.bias).encode())
    return h.hexdigest()


@dataclass
class RetrievalEmbeddings:
    """Offer embeddings (bundle float32) and the query side: a user tower or stored embeddings."""

    source: Path
    offer: np.ndarray  # float32 [offers, D] unit rows, catalog order
    tower_layers: list[Any] | None = None  # DenseLayer list (identity last) when a tower
    tower_user_specs: list[Any] | None = None  # FeatureSpec (the feature schema)
    tower_context_specs: list[Any] | None = None
    tower_context_json: list[dict[str, Any]] | None = None
    user_embeddings: np.ndarray | None = None  # float32 [users, D] unit rows (users.csv order)
    tower_schema: dict[str, Any] | None = None  # the feature schema ({"id", "features"}) of the tower

    @property
    def query(self) -> str:
        return "user_tower" if self.tower_layers is not None else "user_embeddings"

    def fingerprint(self) -> dict[str, Any]:
        """What the bundle must match (recorded in the uplift manifest fragment)."""
        out: dict[str, Any] = {"query": self.query, "offer_embeddings_sha256": array_sha256(self.offer),
                               "embedding_dim": int(self.offer.shape[1])}
        if self.tower_layers is not None:
            out["user_tower_sha256"] = tower_sha256(self.tower_layers, self.tower_context_json or [])
        return out

    def queries(self, user_frame: pd.DataFrame | Mapping[str, Sequence[Any]],
                context_frame: pd.DataFrame | Mapping[str, Sequence[Any]], user_idx: np.ndarray) -> np.ndarray:
        """float32 [n, D] unit query embeddings: the tower over (raw user features, raw
        context) or the stored embedding of ``user_idx`` (users.csv row; -1 = unknown user ->
        the normalised mean offer embedding, the service's cold start)."""
        from offline.uplift_models import encode_section, mlp_forward

        n = len(user_idx)
        if self.tower_layers is not None:
            x = np.concatenate([encode_section(self.tower_user_specs or [], user_frame, n),
                                encode_section(self.tower_context_specs or [], context_frame, n)], axis=1)
            return unit_rows32(mlp_forward(self.tower_layers, x))
        assert self.user_embeddings is not None
        cold = unit_rows32(self.offer.astype(np.float64).mean(axis=0, keepdims=True))[0]
        idx = np.asarray(user_idx, dtype=np.int64)
        out = np.where((idx >= 0)[:, None], self.user_embeddings[np.maximum(idx, 0)], cold[None, :])
        return np.ascontiguousarray(out, dtype=np.float32)

    def scores(self, queries: np.ndarray, offer_idx: np.ndarray) -> np.ndarray:
        """float64 [n]: score of row i's query with offer ``offer_idx[i]``."""
        return np.einsum("ij,ij->i", queries.astype(np.float64), self.offer[offer_idx].astype(np.float64))

    def score_matrix(self, queries: np.ndarray, offers: np.ndarray | None = None) -> np.ndarray:
        """float64 [n, m]: every row's query against every offer (or the offers given)."""
        emb = self.offer if offers is None else self.offer[offers]
        return queries.astype(np.float64) @ emb.T.astype(np.float64)


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise common.JobError(f"{path}: file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise common.JobError(f"{path}: not a numeric .npy: {exc}") from exc
    if arr.ndim != 2 or not np.isfinite(arr).all():
        raise common.JobError(f"{path}: expected a finite 2-D array, got shape {arr.shape}")
    return arr


def tower_from_spec(spec: Mapping[str, Any], schema: Mapping[str, Any], root: Path) -> dict[str, Any]:
    from offline.uplift import load_mlp
    from offline.uplift_models import FeatureSpec

    head = spec["heads"]["embedding"]
    if list(head.get("inputs", [])) != ["user", "context"]:
        raise common.JobError(f"{root}: user tower inputs {head.get('inputs')} (expected user, context)")
    ctx = list(spec["inputs"]["context"]["features"])
    return {"tower_layers": load_mlp(head, root),
            "tower_user_specs": [FeatureSpec.from_json(f) for f in schema["features"]],
            "tower_context_specs": [FeatureSpec.from_json(f) for f in ctx], "tower_context_json": ctx,
            "tower_schema": {"id": schema.get("id") or common.compact_json_sha16(list(schema["features"])),
                             "features": list(schema["features"])}}


def read_users_jsonl_embeddings(path: Path, user_ids: Sequence[str]) -> np.ndarray:
    """float32 [len(user_ids), D] unit rows from a users.jsonl (header line first); a user
    missing from the file gets a zero row."""
    if not path.is_file():
        raise common.JobError(f"{path}: file not found")
    pos = {str(u): i for i, u in enumerate(user_ids)}
    rows: dict[int, list[float]] = {}
    with open(path, encoding="utf-8") as handle:
        header = json.loads(next(handle)).get("header", {})
        dim = int(header.get("embedding_dim", 0))
        for line in handle:
            rec = json.loads(line)
            i = pos.get(str(rec.get("user_id")))
            if i is not None and rec.get("embedding") is not None:
                rows[i] = rec["embedding"]
    out = np.zeros((len(user_ids), dim), dtype=np.float64)
    for i, e in rows.items():
        out[i] = e
    return unit_rows32(out)


def load_embeddings(path: str | Path, user_ids: Sequence[str] | None = None,
                    users_jsonl: str | Path | None = None) -> RetrievalEmbeddings:
    """Read the embeddings of a train output directory or a bundle (see the module docstring).
    ``user_ids`` (users.csv order) and ``users_jsonl`` are needed only without a user tower."""
    root = Path(path)
    if not root.is_dir():
        raise common.JobError(f"{root}: embeddings directory not found")
    manifest = root / "MANIFEST.json"
    if manifest.is_file():  # a bundle: its own files are the truth
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        offer = _load_npy(root / "offer_embeddings.npy").astype(np.float32)
        tower = (doc.get("models") or {}).get("user_tower")
        if tower is not None:
            return RetrievalEmbeddings(root, offer, **tower_from_spec(tower, doc["feature_schema"], root))
        if users_jsonl is None or user_ids is None:
            raise common.JobError(f"{root}: bundle without a user tower; give its users.jsonl for the stored "
                                  f"user embeddings")
        return RetrievalEmbeddings(root, offer, user_embeddings=read_users_jsonl_embeddings(Path(users_jsonl),
                                                                                            user_ids))
    offer = bundle_offer_embeddings(_load_npy(root / "offer_embeddings.npy"))
    frag_path = root / TOWER_FRAGMENT
    if frag_path.is_file():
        frag = json.loads(frag_path.read_text(encoding="utf-8"))
        return RetrievalEmbeddings(root, offer, **tower_from_spec(frag["models"]["user_tower"],
                                                                    frag["feature_schema"], root))
    users = _load_npy(root / "user_embeddings.npy")
    if user_ids is not None and users.shape[0] != len(user_ids):
        raise common.JobError(f"{root / 'user_embeddings.npy'}: {users.shape[0]} rows, users.csv has {len(user_ids)}")
    return RetrievalEmbeddings(root, offer, user_embeddings=unit_rows32(users))
