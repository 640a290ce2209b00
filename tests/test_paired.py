"""benchmarks/runner.py and paired.py: the paired table (differences, intervals, validation vs test split), diagnostics, the arms."""
import csv
import json
import os
import sys

import numpy as np
import pytest
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # the benchmarks import their runner as a sibling module
import paired as paired_benchmark  # noqa: E402
import runner  # noqa: E402

ARMS = runner.load_arms()


@pytest.fixture(scope="module")
def paired():
    return paired_benchmark


def write_run(base, arm, seed, rank1, mAP, val=False, diag=None):
    out = os.path.join(base, f"{arm}_s{seed}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "val.json" if val else "eval.json"), "w") as fh:
        json.dump({"rank1": rank1, "mAP": mAP}, fh)
    if diag is not None:
        with open(os.path.join(out, "metrics.csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["epoch", *diag])
            w.writeheader()
            w.writerow({"epoch": 1, **{k: "" for k in diag}})  # before HTG starts: empty
            w.writerow({"epoch": 2, **diag})


def summarise(base, arms, seeds, reference, val=False):
    return runner.summarise(str(base), arms, seeds, reference, "a title", val=val)


def test_paired_ci_is_students_t(paired):
    d = [0.3, 1.1, -0.2, 0.8, 0.5]
    m, lo, hi = runner.paired_ci(d)
    half = stats.t.ppf(0.975, 4) * np.std(d, ddof=1) / np.sqrt(5)
    assert m == pytest.approx(np.mean(d))
    assert (lo, hi) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    m1, lo1, hi1 = runner.paired_ci([2.0])
    assert m1 == 2.0 and np.isnan(lo1) and np.isnan(hi1)


def test_summary_pairs_by_seed_and_reads_the_right_split(paired, tmp_path):
    base = tmp_path / "small"
    # the arm beats the reference by exactly 1 point of mAP and 2 of rank-1 on every seed; seed 3 has no pair
    for s, (r, m) in enumerate([(0.10, 0.20), (0.30, 0.25), (0.20, 0.15)]):
        write_run(base, "ref", s, r, m)
        write_run(base, "arm", s, r + 0.02, m + 0.01, diag={"g_shift": 0.1 + s / 100, "d_auc": 0.7, "gap_change": -0.004})
    write_run(base, "arm", 3, 0.9, 0.9)
    write_run(base, "arm", 0, 0.99, 0.99, val=True)  # a validation result must not leak into the test table
    table = summarise(base, ["ref", "arm"], [0, 1, 2, 3], "ref")
    row = next(line for line in table.splitlines() if line.startswith("| arm | 4 |"))
    assert "| 3 | +2.00 [+2.00, +2.00] | +1.00 [+1.00, +1.00] |" in row  # 3 pairs, zero spread
    assert "| arm | 3 | 0.1 to 0.12 | 0.7 to 0.7 |" in table  # diagnostics from the last epoch of the 3 runs that have them
    with open(base / "paired.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["arm"] for r in rows] == ["ref", "arm"] and rows[1]["pairs"] == "3"
    assert (base / "paired.md").read_text().strip() == table.strip()

    val = summarise(base, ["ref", "arm"], [0], "ref", val=True)
    assert "| arm | 1 | 99.0 | 99.0 |" in val
    assert (base / "paired_val.md").is_file()


def test_summary_without_runs_says_so(paired, tmp_path):
    with pytest.raises(SystemExit, match="no finished run"):
        summarise(tmp_path, ["ref"], [0], "ref")


def test_every_htg_arm_names_the_keys_whose_defaults_changed():
    """An arm's meaning must not change when a default does: each HTG arm sets every key whose default ever changed."""
    changed = ["htg.mining", "htg.g_target", "htg.g_label", "htg.lr", "htg.f_hard", "htg.margin", "htg.g_close", "htg.g_classifier",
               "htg.g_center", "htg.g_balance"]
    htg_arms = [a for a in ARMS.values() if any(o.startswith("htg.enabled=true") for o in a.overrides)]
    assert len(htg_arms) >= 20
    for arm in htg_arms:
        keys = {o.split("=", 1)[0] for o in arm.overrides}
        assert set(changed) <= keys, f"arm {arm.name} leaves {sorted(set(changed) - keys)} to the defaults"


def test_arm_files_are_checked(tmp_path):
    (tmp_path / "a.yaml").write_text("one: {about: x, overrides: [epochs=1]}\ntwo: {about: y, base: one, overrides: [epochs=2]}\n")
    arms = runner.load_arms(str(tmp_path))
    assert arms["two"].overrides == ("epochs=1", "epochs=2")  # the base first: the arm's own override wins
    (tmp_path / "b.yaml").write_text("three: {about: z, base: nowhere, overrides: []}\n")
    with pytest.raises(ValueError, match="base 'nowhere' is not an arm"):
        runner.load_arms(str(tmp_path))
    (tmp_path / "b.yaml").write_text("one: {about: z, overrides: []}\n")
    with pytest.raises(ValueError, match="defined twice"):
        runner.load_arms(str(tmp_path))
    (tmp_path / "b.yaml").write_text("four: {overrides: []}\n")
    with pytest.raises(ValueError, match="needs `about`"):
        runner.load_arms(str(tmp_path))


def test_bad_arm_definition_is_refused(paired, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["paired.py", "--arm", "nonsense", "--runs-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="NAME="):
        paired.main()
    monkeypatch.setattr("sys.argv", ["paired.py", "--arms", "no_such_arm", "--runs-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown arm"):
        paired.main()
    monkeypatch.setattr("sys.argv", ["paired.py", "--arms", "htg", "--runs-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="now called 'htg_v1_batchhard_reversed'"):
        paired.main()


def test_every_arm_is_a_valid_config_and_later_overrides_win(paired):
    """A typo in an arm's key or value fails here, not an hour into a benchmark; an arm's own key beats its base's."""
    from reid_htg.config import load_config

    for arm in ARMS.values():
        overrides = [o.format(gan="runs/gan") for o in arm.overrides]
        for config, _, _ in paired.DATASETS.values():
            load_config(path=os.path.join(ROOT, "configs", config), overrides=overrides)
    cfg = load_config(path=os.path.join(ROOT, "configs", "cuhk03_cpu.yaml"), overrides=ARMS["both_fh2"].overrides)
    assert (cfg.htg.f_hard, cfg.htg.g_steps, cfg.model.keypoint_blocks) == (2.0, 1, (3, 4))
    assert load_config(overrides=ARMS["both_fh2_static"].overrides).htg.g_steps == 0
    assert load_config(overrides=ARMS["htg_v1_batchhard_reversed"].overrides).htg.f_hard == 0.5
    assert load_config(overrides=ARMS["basic"].overrides).model.keypoint_blocks == ()


def test_regime_point_pairs_learned_with_static_and_reads_the_start(tmp_path):
    import htg_regimes

    base = tmp_path / "cub50_long"
    for s, (learned, static) in enumerate([(0.30, 0.28), (0.25, 0.25), (0.31, 0.28)]):
        for arm, r1, act in (("both_fh2", learned, 0.9), ("both_fh2_static", static, 0.9)):
            out = base / f"{arm}_s{s}"
            out.mkdir(parents=True)
            (out / "eval.json").write_text(json.dumps({"recall@1": r1, "map@r": 0.05}))
            (out / "metrics.csv").write_text("epoch,tri_active_all,htg_on\n1,0.99,0\n2," + f"{act + s / 100}" + ",0\n3,0.5,1\n")
    p = htg_regimes.regime_point(str(base), "both_fh2", "both_fh2_static", [0, 1, 2, 3])
    assert p["metric"] == "recall@1" and p["pairs"] == 3 and p["per_seed"] == pytest.approx([2.0, 0.0, 3.0])
    m, lo, hi = runner.paired_ci([2.0, 0.0, 3.0])
    assert (p["mean"], p["low"], p["high"]) == pytest.approx((m, lo, hi))
    assert p["active_at_start"] == pytest.approx(0.91)  # the last epoch before HTG, mean over seeds
    (base / "both_fh2_s0" / "metrics.csv").write_text("epoch,tri_active_all,htg_on\n1,0.99,1\n")
    assert htg_regimes.active_at_start(str(base / "both_fh2_s0")) is None  # HTG from the first epoch: no epoch before it
