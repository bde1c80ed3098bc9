"""Tests of the IPS estimators (``offline/ips.py``) and the policy evaluation job
(``offline evaluate``) on a small synthetic world."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from offline import evaluate as ev
from offline.ips import dr_difference, ips_difference, ips_value
from offline.uplift_models import DenseLayer, FeatureSpec, mlp_forward

from .conftest import run_job

# ---------------------------------------------------------------------------------------------
# IPS


def _bandit(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Contextual bandit fixture: 2 contexts x 3 actions, logging propensities depend on the
    context, Bernoulli rewards with known means; target: action 2 in context 0, action 0 in 1."""
    means = np.array([[0.10, 0.30, 0.60], [0.50, 0.20, 0.05]])
    logging = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    target_action = np.array([2, 0])
    ctx = rng.integers(0, 2, n)
    u = rng.random(n)[:, None]
    action = (u > np.cumsum(logging[ctx], axis=1)).sum(axis=1)
    reward = (rng.random(n) < means[ctx, action]).astype(np.float64)
    mu = logging[ctx, action]
    pi = (action == target_action[ctx]).astype(np.float64)
    truth = float(np.mean(means[np.arange(2), target_action]))  # contexts are equally likely
    return reward, mu, pi, ctx, truth


def test_ips_of_the_logging_policy_is_the_logged_mean() -> None:
    rng = np.random.default_rng(1)
    reward, mu, _, _, _ = _bandit(rng, 5000)
    est = ips_value(reward, mu, mu)
    assert est.estimate == pytest.approx(reward.mean(), abs=1e-12)
    assert est.snips == pytest.approx(reward.mean(), abs=1e-12)
    assert est.effective_sample_size == pytest.approx(reward.size)
    value, lo, hi = est  # unpacks as (estimate, ci_low, ci_high)
    assert lo < value < hi


def test_ips_confidence_intervals_cover_the_truth() -> None:
    rng = np.random.default_rng(2)
    reward, mu, pi, _, truth = _bandit(rng, 20_000)
    est = ips_value(reward, mu, pi)
    assert est.ci_low <= truth <= est.ci_high
    assert est.snips_ci_low <= truth <= est.snips_ci_high
    assert est.matched == int((pi > 0).sum())
    # nominal coverage over many logs (95% CI: binomial(300, 0.95) is >= 0.90 w.p. > 0.999)
    covered = np.zeros(2)
    for _ in range(300):
        r, m, p, _, t = _bandit(rng, 2_000)
        e = ips_value(r, m, p)
        covered += [e.ci_low <= t <= e.ci_high, e.snips_ci_low <= t <= e.snips_ci_high]
    assert np.all(covered / 300 >= 0.90), covered / 300


def test_ips_difference_is_the_paired_difference_of_two_values() -> None:
    rng = np.random.default_rng(3)
    reward, mu, pi, ctx, truth = _bandit(rng, 20_000)
    baseline = (ctx == 0) & (mu == 0.6)  # "always action 0" in context 0 only, as a second policy
    pb = np.where(ctx == 0, baseline, 0.0).astype(np.float64)
    diff = ips_difference(reward, mu, pi, pb)
    a, b = ips_value(reward, mu, pi), ips_value(reward, mu, pb)
    assert diff.estimate == pytest.approx(a.estimate - b.estimate)
    assert diff.snips == pytest.approx(a.snips - b.snips)
    truth_b = 0.5 * 0.10  # action 0 in context 0 (reward 0.10), nothing in context 1
    assert diff.ci_low <= truth - truth_b <= diff.ci_high


def test_ips_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        ips_value([1.0, 0.0], [0.5], [1.0, 0.0])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ips_value([1.0, 0.0], [0.5, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="no rows"):
        ips_value([], [], [])


# ---------------------------------------------------------------------------------------------
# policy evaluation


def test_uplift_scores_split_first_layer_equals_the_dense_head() -> None:
    rng = np.random.default_rng(4)
    user = [FeatureSpec("age", "numeric", 40.0, 10.0), FeatureSpec("tier", "categorical", vocabulary=("a", "b"))]
    offer = [FeatureSpec("category", "categorical", vocabulary=("x", "y")), FeatureSpec("margin", "numeric", 5, 2)]
    ctx = [FeatureSpec("channel", "categorical", vocabulary=("web",))]
    width = {"user": 4, "offer": 4, "context": 2}

    def head(inputs: list[str]) -> list[DenseLayer]:
        d = sum(width[s] for s in inputs)
        return [DenseLayer(rng.normal(size=(6, d)), rng.normal(size=6), "relu"),
                DenseLayer(rng.normal(size=(1, 6)), rng.normal(size=1), "sigmoid")]

    model = ev.UpliftHeads(Path("."), {"user": user, "context": ctx, "offer": offer}, ["user", "context"],
                           ["offer", "user", "context"], head(["user", "context"]),
                           head(["offer", "user", "context"]), "x")
    frames = {"user": pd.DataFrame({"age": [20.0, 55.0, None], "tier": ["a", "b", "zzz"]}),
              "context": pd.DataFrame({"channel": ["web", "app", "web"]})}
    offers = pd.DataFrame({"category": ["x", "y"], "margin": [3.0, 9.0]})
    p0, p1 = ev.uplift_scores(model, frames, 3, offers)
    from offline.uplift_models import encode_section

    xu, xc, xo = (encode_section(user, frames["user"]), encode_section(ctx, frames["context"]),
                  encode_section(offer, offers))
    want0 = mlp_forward(model.p0_layers, np.concatenate([xu, xc], axis=1)).ravel()
    assert np.allclose(p0, want0, rtol=1e-6)
    for j in range(2):
        x = np.concatenate([np.repeat(xo[j:j + 1], 3, axis=0), xu, xc], axis=1)
        assert np.allclose(p1[:, j], mlp_forward(model.p1_layers, x).ravel(), rtol=1e-5, atol=1e-7)


def test_uplift_scores_with_a_retrieval_column_equal_the_dense_head() -> None:
    rng = np.random.default_rng(5)
    user = [FeatureSpec("age", "numeric", 40.0, 10.0)]
    offer = [FeatureSpec("category", "categorical", vocabulary=("x", "y"))]
    ret = [FeatureSpec("retrieval_score", "numeric", 0.1, 0.2)]
    d1 = 1 + 3 + 1
    p1_layers = [DenseLayer(rng.normal(size=(5, d1)), rng.normal(size=5), "relu"),
                 DenseLayer(rng.normal(size=(4, 5)), rng.normal(size=4), "relu"),
                 DenseLayer(rng.normal(size=(1, 4)), rng.normal(size=1), "sigmoid")]
    p0_layers = [DenseLayer(rng.normal(size=(1, 1)), rng.normal(size=1), "sigmoid")]
    model = ev.UpliftHeads(Path("."), {"user": user, "offer": offer, "retrieval": ret}, ["user"],
                           ["user", "offer", "retrieval"], p0_layers, p1_layers, "x")
    frames = {"user": pd.DataFrame({"age": [20.0, 55.0, None]})}
    offers = pd.DataFrame({"category": ["x", "y", "z", "x"]})
    scores = rng.normal(0.1, 0.3, size=(3, 4))
    allowed = np.array([[True, False, True, True], [True, True, True, True], [False, False, False, True]])
    p0, p1 = ev.uplift_scores(model, frames, 3, offers, scores)
    _, p1_allowed = ev.uplift_scores(model, frames, 3, offers, scores, allowed)
    from offline.uplift_models import encode_section

    xu, xo = encode_section(user, frames["user"]), encode_section(offer, offers)
    for i in range(3):
        for j in range(4):
            xr = encode_section(ret, {"retrieval_score": [scores[i, j]]}, 1)
            x = np.concatenate([xu[i:i + 1], xo[j:j + 1], xr], axis=1)
            want = mlp_forward(p1_layers, x)[0, 0]
            assert p1[i, j] == pytest.approx(want, rel=1e-5, abs=1e-7)
            assert (p1_allowed[i, j] == pytest.approx(want, rel=1e-5, abs=1e-7)) if allowed[i, j] \
                else np.isnan(p1_allowed[i, j])
    with pytest.raises(ValueError, match="retrieval_scores"):
        ev.uplift_scores(model, frames, 3, offers)


def test_top_n_and_slate_sums() -> None:
    scores = np.array([[3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 1.0, 1.0]])
    allowed = np.array([[True, True, True, False], [False, True, False, False]])
    choice = ev.top_n(scores, allowed, 2)
    assert choice.tolist() == [[0, 2], [1, -1]]
    (total,) = ev.slate_sums(choice, scores)
    assert total.tolist() == [5.0, 1.0]


@pytest.fixture(scope="module")
def evaluated(world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("evaluate") / "e"
    result = run_job("evaluate", "--world", world_dir, "--out", out, "--page-views", "400",
                     "--uplift-arg=--epochs=3", "--uplift-arg=--hidden=8", "--train-arg=--epochs=3")
    assert result.code == 0, result.err
    return out, json.loads((out / "evaluate.json").read_text())


def test_evaluate_writes_json_markdown_and_chart(evaluated: tuple) -> None:
    out, doc = evaluated
    assert (out / "evaluate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "evaluate.md").read_text()
    for name in ev.POLICIES:
        assert f"| {name} |" in md
    assert set(doc["average"]["policies"]) == set(ev.POLICIES)
    world = doc["worlds"][0]["result"]
    assert world["page_views"] == 400 and world["uplift_trained_here"] is True
    assert (Path(world["uplift_model"])).is_file()


def test_oracle_is_an_upper_bound_and_no_offer_is_zero(evaluated: tuple) -> None:
    _, doc = evaluated
    pol = doc["worlds"][0]["result"]["policies"]
    assert pol["no_offer"]["profit_per_1000"] == 0.0 and pol["no_offer"]["mean_slate_size"] == 0.0
    for name in ev.POLICIES:
        assert pol["oracle"]["profit_per_1000"] >= pol[name]["profit_per_1000"] - 1e-9, name
    assert pol["oracle"]["profit_per_1000"] > 0
    for name in ("response_only", "popularity", "random", "ours_no_gate"):
        assert pol[name]["mean_slate_size"] == pytest.approx(3.0, abs=0.5)  # always fills N when it can
    assert pol["oracle"]["share_of_oracle"] == pytest.approx(1.0)


def test_ips_self_check_and_estimate_are_reported(evaluated: tuple) -> None:
    _, doc = evaluated
    ips = doc["worlds"][0]["result"]["ips"]
    assert ips["logging_policy_self_check"]["equal"] is True
    assert ips["action_set_reconstruction"]["propensity_consistent_share"] > 0.9  # offers never drawn are missed
    est = ips["incremental_value_ours"]
    assert est["ips_ci"][0] <= est["ips"] <= est["ips_ci"][1]
    assert np.isfinite(ips["truth_ours_per_1000"])
    dr = ips["doubly_robust_ours"]
    assert dr["dr_ci"][0] <= dr["dr"] <= dr["dr_ci"][1]
    assert dr["std_error"] == pytest.approx(max(dr["sample_std_error"], dr["model_std_error"]))
    assert dr["dr"] == pytest.approx(dr["direct"] + dr["correction"])
    assert isinstance(ips["dr_ci_covers_truth"], bool) and ips["rows_ours_matches_logged_offer"] >= 0


def test_load_uplift_model_from_a_bundle_manifest(evaluated: tuple, tmp_path: Path) -> None:
    _, doc = evaluated
    src = Path(doc["worlds"][0]["result"]["uplift_model"]).parent
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    frag = json.loads((bundle / "uplift_manifest_fragment.json").read_text())
    (bundle / "uplift_manifest_fragment.json").unlink()
    (bundle / "MANIFEST.json").write_text(json.dumps({"format": "offerd-bundle", **frag}))
    model = ev.load_uplift_model(bundle)
    assert model.p1_inputs[-2:] == ["offer", "retrieval"] and model.feature_schema_id == frag["feature_schema"]["id"]
    assert model.policy == frag["policy"] and model.min_ev(None) == frag["policy"]["min_ev"]
    assert model.min_ev(0.5) == 0.5
    with pytest.raises(Exception, match="models.uplift"):
        ev.load_uplift_model(tmp_path)


def test_the_model_reads_the_retrieval_score_of_the_two_tower_embeddings(evaluated: tuple) -> None:
    out, doc = evaluated
    res = doc["worlds"][0]["result"]
    assert res["retrieval_feature"]["query"] == "user_tower"
    frag = json.loads((Path(res["uplift_model"])).read_text())
    assert frag["models"]["uplift"]["heads"]["p1"]["inputs"][-2:] == ["offer", "retrieval"]
    # recorded relative to the fragment's directory (the build's files do not depend on where it ran)
    assert frag["retrieval"]["source"] == "../train"
    assert (out / "uplift" / "w" / "bundle" / frag["retrieval"]["source"]).resolve() == \
        (out / "uplift" / "w" / "train").resolve()
    assert res["min_ev"] == frag["policy"]["min_ev"] >= 0


def test_export_carries_the_retrieval_section_and_checks_the_embeddings(evaluated: tuple, world_dir: Path,
                                                                        tmp_path: Path) -> None:
    """export --models-from keeps the section, the golden cases (re-evaluated here with numpy
    from their raw inputs, retrieval_score included) and the validated min_ev; it refuses a
    bundle whose embeddings differ from those the scores were computed with."""
    from offline.uplift import load_mlp
    from offline.uplift_models import encode_section

    out, doc = evaluated
    upl = Path(doc["worlds"][0]["result"]["uplift_model"]).parent
    train_dir = out / "uplift" / "w" / "train"
    ok = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "v1",
                 "--users-out", tmp_path / "u1.jsonl", "--embeddings-from", train_dir,
                 "--models-from", upl, "--models-from", train_dir)
    assert ok.code == 0, ok.err
    bundle = tmp_path / "s" / "v1"
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    frag = json.loads((upl / "uplift_manifest_fragment.json").read_text())
    spec = manifest["models"]["uplift"]
    assert spec == frag["models"]["uplift"] and "user_tower" in manifest["models"]
    (feature,) = spec["inputs"]["retrieval"]["features"]
    assert feature["name"] == "retrieval_score" and feature["kind"] == "numeric" and feature["std"] > 0
    assert manifest["policy"]["min_ev"] == frag["policy"]["min_ev"] and manifest["policy"]["retrieval_k"] == 200
    cases = json.loads((bundle / "golden.json").read_text())["models"]["uplift"]["cases"]
    assert sum("retrieval_score" in c["inputs"].get("retrieval", {}) for c in cases) >= len(cases) - 2
    sections = {"user": [FeatureSpec.from_json(f) for f in manifest["feature_schema"]["features"]]}
    for sec in ("purchases", "context", "offer", "retrieval"):
        sections[sec] = [FeatureSpec.from_json(f) for f in spec["inputs"][sec]["features"]]
    heads = {h: load_mlp(spec["heads"][h], bundle) for h in ("p0", "p1")}
    for case in cases:
        enc = {sec: encode_section(fs, {f.name: [case["inputs"].get(sec, {}).get(f.name)] for f in fs}, 1)
               for sec, fs in sections.items()}
        for h in ("p0", "p1"):
            x = np.concatenate([enc[s] for s in spec["heads"][h]["inputs"]], axis=1)
            assert mlp_forward(heads[h], x)[0, 0] == pytest.approx(case["outputs"][h], rel=1e-5, abs=1e-7)
    # the scores in the examples are the service's: unit query (tower over user + context) . offer row
    from offline import retrieval

    emb = retrieval.load_embeddings(bundle)
    offer_ids = pd.read_json(world_dir / "offers.jsonl", lines=True, dtype=False)["offer_id"].astype(str).tolist()
    checked = 0
    for case in cases[:8]:
        inputs = case["inputs"]
        if inputs["offer"].get("offer_id") not in offer_ids:
            continue
        q = emb.queries({k: [v] for k, v in inputs["user"].items()},
                        {k: [v] for k, v in inputs["context"].items()}, np.array([0]))
        score = float(emb.scores(q, np.array([offer_ids.index(inputs["offer"]["offer_id"])]))[0])
        assert score == pytest.approx(inputs["retrieval"]["retrieval_score"], abs=1e-6)
        checked += 1
    assert checked >= 1
    # other embeddings (the export baseline) or no user tower: refused, naming the problem
    bad = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "v2",
                  "--users-out", tmp_path / "u2.jsonl", "--models-from", upl, "--models-from", train_dir)
    assert bad.code == 2 and "retrieval_score" in bad.err and "offer_embeddings_sha256" in bad.err
    bad = run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "v3",
                  "--users-out", tmp_path / "u3.jsonl", "--embeddings-from", train_dir, "--models-from", upl)
    assert bad.code == 2 and "query" in bad.err and not (tmp_path / "s" / "v3").exists()


def test_evaluate_reads_the_bundle_and_its_min_ev(evaluated: tuple, world_dir: Path, tmp_path: Path) -> None:
    out, doc = evaluated
    upl = Path(doc["worlds"][0]["result"]["uplift_model"]).parent
    train_dir = out / "uplift" / "w" / "train"
    assert run_job("export", "--world", world_dir, "--snapshot-root", tmp_path / "s", "--version", "v1",
                   "--users-out", tmp_path / "u.jsonl", "--embeddings-from", train_dir,
                   "--models-from", upl, "--models-from", train_dir).code == 0
    r = run_job("evaluate", "--world", world_dir, "--uplift-model", tmp_path / "s" / "v1", "--out", tmp_path / "e",
                "--page-views", "400", "--min-ev", "0.25")
    assert r.code == 0, r.err
    got = json.loads((tmp_path / "e" / "evaluate.json").read_text())["worlds"][0]["result"]
    assert got["min_ev"] == 0.25 and got["retrieval_feature"]["source"] == str(tmp_path / "s" / "v1")
    assert got["uplift_trained_here"] is False
    # same model, same page views: the fragment and the bundle give the same policy values at the same gate
    r = run_job("evaluate", "--world", world_dir, "--uplift-model", upl, "--out", tmp_path / "e2",
                "--page-views", "400", "--min-ev", "0.25")
    assert r.code == 0, r.err
    again = json.loads((tmp_path / "e2" / "evaluate.json").read_text())["worlds"][0]["result"]
    for name in ("ours", "response_only", "uplift_only"):
        assert again["policies"][name]["profit_per_1000"] == pytest.approx(got["policies"][name]["profit_per_1000"])


def test_bad_input_exits_2_naming_the_file_and_problem(world_dir: Path, tmp_path: Path) -> None:
    none = run_job("evaluate", "--out", tmp_path / "o")
    assert none.code == 2 and "--world" in none.err

    w = tmp_path / "w"
    shutil.copytree(world_dir, w)
    log = pd.read_csv(w / "campaign_log.csv", dtype=str)
    log.drop(columns=["propensity"]).to_csv(w / "campaign_log.csv", index=False)
    r = run_job("evaluate", "--world", w, "--out", tmp_path / "o1")
    assert r.code == 2 and "campaign_log.csv" in r.err and "propensity" in r.err

    bad = log.copy()
    bad.loc[5, "propensity"] = "0"
    bad.to_csv(w / "campaign_log.csv", index=False)
    r = run_job("evaluate", "--world", w, "--out", tmp_path / "o2")
    assert r.code == 2 and "column propensity" in r.err and "data row 6" in r.err

    log.to_csv(w / "campaign_log.csv", index=False)
    shutil.rmtree(w / "ground_truth")
    r = run_job("evaluate", "--world", w, "--out", tmp_path / "o3")
    assert r.code == 2 and "truth.json" in r.err

    r = run_job("evaluate", "--world", world_dir, "--world", world_dir, "--uplift-model", tmp_path,
                "--out", tmp_path / "o4")
    assert r.code == 2 and "--uplift-model" in r.err


def test_dr_difference_with_a_zero_model_is_ips_and_takes_the_larger_error() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    mu = rng.choice([0.2, 0.01], n)
    pa = (rng.random(n) < 0.3).astype(float)
    pb = 1.0 - pa
    r = rng.gamma(0.3, 10.0, n)
    zero = np.zeros(n)
    dr = dr_difference(r, mu, pa, pb, zero, zero, zero)
    ips = ips_difference(r, mu, pa, pb)
    assert dr.estimate == pytest.approx(ips.estimate) and dr.sample_std_error == pytest.approx(ips.std_error)
    assert dr.model_std_error is None and dr.std_error == dr.sample_std_error
    big = dr_difference(r, mu, pa, pb, zero, zero, zero, model_variance=np.full(n, 1e6))
    assert big.model_std_error == pytest.approx(1e3 / math.sqrt(n)) and big.std_error == big.model_std_error
    with pytest.raises(ValueError):
        dr_difference(r, mu, pa, pb, zero, zero, zero, model_variance=-np.ones(n))


def test_dr_interval_covers_a_rarely_logged_heavy_tailed_policy() -> None:
    """The evaluate situation in small: the target's action is logged on ~1% of the rows and the
    reward is heavy-tailed. The DR interval with the model's design variance keeps its 95%
    coverage over re-drawn logs; the sample-variance IPS interval does not."""
    rng = np.random.default_rng(0)
    n, k, pc = 4000, 80, 0.2
    value = rng.pareto(1.8, n) * 20 + 5  # what a conversion is worth (margin + beta CLV)
    p0 = rng.uniform(0.02, 0.4, n)
    p1 = np.clip(p0 + rng.normal(0.02, 0.03, n), 0, 1)
    truth = ((p1 - p0) * value).mean()
    q_none, q_best = 0.9 * p0 * value, 0.9 * p1 * value  # a reward model that is a bit off
    var = (0.9 * p1 * (1 - 0.9 * p1) * value ** 2) / ((1 - pc) / k) + (0.9 * p0 * (1 - 0.9 * p0) * value ** 2) / pc
    covered = {"dr": 0, "ips": 0}
    reps = 300
    for _ in range(reps):
        treated = rng.random(n) >= pc
        match = treated & (rng.random(n) < 1.0 / k)
        y = rng.random(n) < np.where(match, p1, p0)
        r = y * value
        mu = np.where(treated, (1 - pc) / k, pc)
        pa, pb = match.astype(float), (~treated).astype(float)
        dr = dr_difference(r, mu, pa, pb, np.where(match, q_best, np.where(treated, 0.0, q_none)), q_best, q_none,
                           model_variance=var)
        ips = ips_difference(r, mu, pa, pb)
        covered["dr"] += dr.ci_low <= truth <= dr.ci_high
        covered["ips"] += ips.ci_low <= truth <= ips.ci_high
    assert covered["dr"] / reps >= 0.92, covered
    assert covered["ips"] < covered["dr"], covered
