"""Tests of the two-tower job (``offline train``): outputs, held-out quality, the user-tower
export (docs/models-format.md), determinism and input errors."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline import train
from offline.uplift import load_mlp
from offline.uplift_models import FeatureSpec, encode_section, mlp_forward

from .conftest import run_job

# Big enough that the held-out comparison is not a coin flip, small enough to train in seconds:
# every user in every campaign, 60 randomized offers per campaign out of 300.
MID_WORLD_ARGS = ["--users", "8000", "--offers", "300", "--seed", "5", "--campaign-fraction", "1.0",
                  "--campaign-offers", "60"]
DIM = 16


@pytest.fixture(scope="module")
def mid_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train_world") / "w"
    result = run_job("synth", "--out", out, *MID_WORLD_ARGS)
    assert result.code == 0, result.err
    return out


@pytest.fixture(scope="module")
def trained(mid_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, train.TwoTowerModel]:
    out = tmp_path_factory.mktemp("train_out") / "t"
    cfg = train.TrainConfig(dim=DIM, ks=(5, 10), seed=0)
    doc, model = train.run(mid_world, out, cfg)
    return out, doc, model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outputs_have_the_documented_shapes_and_unit_rows(trained: tuple, mid_world: Path) -> None:
    out, doc, _ = trained
    users = pd.read_csv(mid_world / "users.csv", dtype={"user_id": str})
    offers = [json.loads(line) for line in (mid_world / "offers.jsonl").read_text().splitlines()]
    offer_emb = np.load(out / "offer_embeddings.npy")
    user_emb = np.load(out / "user_embeddings.npy")
    assert offer_emb.dtype == np.dtype("<f4") and offer_emb.shape == (len(offers), DIM)
    assert user_emb.dtype == np.dtype("<f4") and user_emb.shape == (len(users), DIM)
    for emb in (offer_emb, user_emb):
        assert np.isfinite(emb).all()
        assert np.allclose(np.linalg.norm(emb.astype(np.float64), axis=1), 1.0, atol=1e-5)
    assert (out / "user_ids.txt").read_text().splitlines() == users["user_id"].tolist()
    written = json.loads((out / "train.json").read_text())
    assert written["metrics"] == json.loads(json.dumps(doc["metrics"]))
    for cand in ("eligible", "campaign", "catalog"):
        for name in ("two_tower", "popularity", "popularity_ctr", "random"):
            m = written["metrics"][cand][name]
            assert {"recall@5", "precision@5", "ndcg@5", "recall@10", "precision@10", "ndcg@10"} <= set(m)
            assert m["precision@10"] == pytest.approx(m["recall@10"] / 10)
    assert (out / "train_metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_tower_beats_popularity_and_random_on_held_out_clicks(trained: tuple) -> None:
    _, doc, _ = trained
    m = doc["metrics"]["campaign"]  # candidates: what the randomized campaign could have shown
    for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
        assert m["two_tower"][key] > m["popularity"][key], key
        assert m["two_tower"][key] > m["random"][key], key
    assert doc["beats_popularity"]["campaign"] is True
    assert doc["data"]["heldout_positives"] > 500


def test_ranking_metrics_break_ties_at_random_in_expectation() -> None:
    rng = np.random.default_rng(0)
    q, m = 50, 40
    eligible = rng.random((q, m)) < 0.5
    positive = rng.integers(0, m, q)
    eligible[np.arange(q), positive] = True
    n_cand = eligible.sum(axis=1)
    flat = train.ranking_metrics(np.zeros((q, m)), eligible, positive, (5,))
    assert flat["recall@5"] == pytest.approx(np.mean(np.minimum(5, n_cand) / n_cand))
    dcg = np.array([sum(1 / np.log2(r + 1) for r in range(1, min(5, c) + 1)) / c for c in n_cand])
    assert flat["ndcg@5"] == pytest.approx(dcg.mean())
    perfect = np.zeros((q, m))
    perfect[np.arange(q), positive] = 1.0
    best = train.ranking_metrics(perfect, eligible, positive, (1, 5))
    assert best["recall@1"] == best["ndcg@1"] == best["ndcg@5"] == 1.0
    assert best["precision@5"] == pytest.approx(0.2)
    # ineligible offers never count, however high they score
    worst = perfect.copy()
    worst[:, :] = np.where(eligible, 0.0, 5.0)
    worst[np.arange(q), positive] = -1.0
    assert train.ranking_metrics(worst, eligible, positive, (5,))["recall@5"] == pytest.approx(
        float(np.mean(n_cand <= 5)))


def _fragment(out: Path) -> dict:
    return json.loads((out / train.FRAGMENT_NAME).read_text())


def _encode_cases(fragment: dict, cases: list[dict]) -> np.ndarray:
    """Encode golden raw inputs from the manifest fragment alone (what the service does)."""
    spec = fragment["models"]["user_tower"]
    head = spec["heads"]["embedding"]
    parts = []
    for sec in head["inputs"]:
        feats = fragment["feature_schema"]["features"] if sec == "user" else spec["inputs"][sec]["features"]
        specs = [FeatureSpec.from_json(f) for f in feats]
        raw = {s.name: [c["inputs"].get(sec, {}).get(s.name) for c in cases] for s in specs}
        parts.append(encode_section(specs, raw, len(cases)))
    return np.concatenate(parts, axis=1)


def test_exported_user_tower_follows_the_contract_and_matches_torch(trained: tuple) -> None:
    import torch

    out, _, model = trained
    frag = _fragment(out)
    spec = frag["models"]["user_tower"]
    assert set(frag) == {"models", "feature_schema", "files"}
    assert spec["inputs"]["user"] == {"source": "feature_schema", "feature_schema_id": frag["feature_schema"]["id"]}
    head = spec["heads"]["embedding"]
    assert head["type"] == "mlp" and head["inputs"] == ["user", "context"]
    assert head["output_dim"] == DIM and head["layers"][-1]["activation"] == "identity"
    widths = {"user": sum(FeatureSpec.from_json(f).width for f in frag["feature_schema"]["features"]),
              "context": sum(FeatureSpec.from_json(f).width for f in spec["inputs"]["context"]["features"])}
    assert head["input_dim"] == head["layers"][0]["in"] == widths["user"] + widths["context"]
    for prev, layer in zip(head["layers"], head["layers"][1:]):
        assert layer["in"] == prev["out"]
    for rel, entry in frag["files"].items():
        assert _sha256(out / rel) == entry["sha256"] and (out / rel).stat().st_size == entry["bytes"]
        if rel.endswith(".npy"):
            arr = np.load(out / rel)
            assert arr.dtype == np.dtype("<f4") and arr.flags["C_CONTIGUOUS"]
    layers = load_mlp(head, out)
    golden = json.loads((out / "golden.json").read_text())["models"]["user_tower"]
    cases = golden["cases"]
    assert len(cases) >= 30 and golden["rtol"] == 1e-5
    assert {} in [c["inputs"]["user"] for c in cases]  # the all-missing case
    x = _encode_cases(frag, cases)
    numpy_out = mlp_forward(layers, x)
    with torch.no_grad():
        torch_out = model.module.user(torch.from_numpy(x)).numpy()
    assert np.allclose(numpy_out, torch_out, rtol=1e-6, atol=1e-6)
    want = np.array([c["outputs"]["embedding"] for c in cases])
    assert want.shape == (len(cases), DIM)
    assert np.allclose(numpy_out, want, rtol=1e-6, atol=1e-7)


def test_user_embeddings_are_the_normalised_tower_with_a_missing_context(trained: tuple, mid_world: Path) -> None:
    out, _, model = trained
    frag = _fragment(out)
    users = pd.read_csv(mid_world / "users.csv", dtype={"user_id": str})
    rows = users.iloc[:50]
    cases = [{"inputs": {"user": {k: v for k, v in r.items() if k not in ("user_id", "signup_date")},
                         "context": {}}} for r in rows.to_dict("records")]
    raw = mlp_forward(load_mlp(frag["models"]["user_tower"]["heads"]["embedding"], out), _encode_cases(frag, cases))
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert np.allclose(np.load(out / "user_embeddings.npy")[:50], expected, atol=1e-5)


def test_export_job_uses_the_embeddings_and_merges_the_user_tower(trained: tuple, mid_world: Path,
                                                                  tmp_path: Path) -> None:
    out, _, _ = trained
    result = run_job("export", "--world", mid_world, "--snapshot-root", tmp_path / "snap", "--version", "v1",
                     "--users-out", tmp_path / "users.jsonl", "--embeddings-from", out, "--models-from", out)
    assert result.code == 0, result.err
    bundle = tmp_path / "snap" / "v1"
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["embedding_dim"] == DIM
    assert manifest["models"]["user_tower"] == _fragment(out)["models"]["user_tower"]
    assert np.allclose(np.load(bundle / "offer_embeddings.npy"), np.load(out / "offer_embeddings.npy"), atol=1e-6)
    for rel, entry in manifest["files"].items():
        assert _sha256(bundle / rel) == entry["sha256"], rel
    assert "user_tower" in json.loads((bundle / "golden.json").read_text())["models"]


def test_export_user_tower_from_a_train_directory_keeps_other_golden_entries(trained: tuple, tmp_path: Path) -> None:
    out, _, model = trained
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "golden.json").write_text(json.dumps({"format": "offerd-golden", "format_version": 1,
                                                    "models": {"uplift": {"cases": []}}}))
    frag = train.export_user_tower(out, bundle)
    golden = json.loads((bundle / "golden.json").read_text())
    assert set(golden["models"]) == {"uplift", "user_tower"}
    assert frag["files"]["golden.json"]["sha256"] == _sha256(bundle / "golden.json")
    for rel in frag["files"]:
        assert (bundle / rel).is_file()
    with pytest.raises(ValueError, match="feature schema"):
        train.export_user_tower(model, tmp_path / "c", feature_schema={"id": "0000000000000000"})


def test_rerun_with_the_same_seed_is_byte_identical(world_dir: Path, tmp_path: Path) -> None:
    args = ["--world", world_dir, "--dim", "8", "--epochs", "2", "--seed", "3"]
    for name in ("a", "b"):
        result = run_job("train", *args, "--out", tmp_path / name)
        assert result.code == 0, result.err
    for rel in ("offer_embeddings.npy", "user_embeddings.npy", "user_ids.txt", "golden.json", train.FRAGMENT_NAME,
                "models/user_tower.embedding.0.weight.npy", "models/user_tower.embedding.1.bias.npy"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = run_job("train", *args[:-1], "4", "--out", tmp_path / "c")
    assert other.code == 0, other.err
    first, third = ((tmp_path / d / "offer_embeddings.npy").read_bytes() for d in ("a", "c"))
    assert first != third


def _copy_world(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ground_truth"))
    return dst


def test_bad_input_exits_2_naming_the_file_and_problem(world_dir: Path, tmp_path: Path) -> None:
    missing = run_job("train", "--world", tmp_path / "nope", "--out", tmp_path / "o")
    assert missing.code == 2 and "nope" in missing.err

    w = _copy_world(world_dir, tmp_path / "w1")
    log = pd.read_csv(w / "campaign_log.csv", dtype=str)
    log.drop(columns=["clicked"]).to_csv(w / "campaign_log.csv", index=False)
    r = run_job("train", "--world", w, "--out", tmp_path / "o1")
    assert r.code == 2 and "campaign_log.csv" in r.err and "clicked" in r.err

    w = _copy_world(world_dir, tmp_path / "w2")
    bad = log.copy()
    bad.loc[3, "clicked"] = "yes"
    bad.to_csv(w / "campaign_log.csv", index=False)
    r = run_job("train", "--world", w, "--out", tmp_path / "o2")
    assert r.code == 2 and "column clicked" in r.err and "'yes'" in r.err

    w = _copy_world(world_dir, tmp_path / "w3")
    bad = log.copy()
    row = int(np.flatnonzero(bad["impression"].to_numpy() == "1")[0])
    bad.loc[row, "offer_id"] = "o_unknown"
    bad.to_csv(w / "campaign_log.csv", index=False)
    r = run_job("train", "--world", w, "--out", tmp_path / "o3")
    assert r.code == 2 and "offer_id" in r.err and "o_unknown" in r.err

    r = run_job("train", "--world", world_dir, "--out", tmp_path / "o4", "--dim", "0")
    assert r.code == 2 and "--dim" in r.err
