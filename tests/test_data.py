import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid_htg.data import (
    DatasetError,
    build_dataset,
    check_dataset,
    queries_without_match,
    relabel,
    validate_table,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _img(path, mode="RGB", size=(16, 32)):
    """A small image whose pixels depend on its name: no two files of a fixture are the same image (a leak check would say so)."""
    import zlib

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(zlib.crc32(str(path).encode())).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def _corrupt(path):
    with open(path, "wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0 this is not a jpeg")


@pytest.fixture
def market(tmp_path):
    root = tmp_path / "market"
    for name in ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s1_000001_00.jpg", "0007_c1s1_000002_00.jpg"]:
        _img(str(root / "bounding_box_train" / name))
    _img(str(root / "bounding_box_train" / "-1_c1s1_000003_00.jpg"))
    for name in ["0003_c1s1_000001_00.jpg", "0004_c2s1_000001_00.jpg"]:
        _img(str(root / "query" / name))
    for name in ["0003_c2s1_000002_00.jpg", "0003_c1s1_000003_00.jpg", "0004_c2s1_000004_00.jpg", "-1_c1s1_000005_00.jpg", "0000_c4s1_000006_00.jpg"]:
        _img(str(root / "bounding_box_test" / name))
    return root


def test_market_layout(market):
    df = build_dataset("market1501", str(market))
    assert list(df.columns) == ["path", "pid", "camid", "split"]
    tr = df[df.split == "train"]
    assert len(tr) == 4 and sorted(tr.pid.unique()) == [2, 7]  # junk dropped from training
    g = df[df.split == "gallery"]
    assert set(g.pid) == {3, 4, -1, 0}  # junk and distractors kept for evaluation
    assert df.loc[df.path.str.endswith("0000_c4s1_000006_00.jpg"), "camid"].item() == 3  # 0-based
    assert df.path.tolist() == sorted(df.path.tolist(), key=lambda p: (["bounding_box_train", "query", "bounding_box_test"].index(os.path.basename(os.path.dirname(p))), p))


def test_query_without_match_is_reported(market):
    df = build_dataset("market1501", str(market))
    lonely = queries_without_match(df)
    assert lonely.pid.tolist() == [4]  # pid 4's only gallery image is from the query's camera
    report = check_dataset(df, progress=False)
    kinds = [p["kind"] for p in report["problems"]]
    assert kinds == ["query_without_match"] and report["usable"]


def test_corrupted_image_is_named_and_unusable(market):
    bad = market / "bounding_box_test" / "0003_c2s1_000002_00.jpg"
    _corrupt(str(bad))
    report = check_dataset(build_dataset("market1501", str(market)), progress=False)
    unread = [p for p in report["problems"] if p["kind"] == "unreadable"]
    assert unread and unread[0]["paths"] == [str(bad)]
    assert not report["usable"]


def test_check_dataset_tool(market, tmp_path):
    out = tmp_path / "r.json"
    from conftest import run_tool_here

    cmd = ["--dataset", "market1501", "--data-root", str(market), "--json", str(out)]
    ok = run_tool_here("check_dataset.py", *cmd, check=False)
    assert ok.returncode == 0, ok.stderr
    rep = json.loads(out.read_text())
    assert rep["splits"]["train"] == {"images": 4, "ids": 2, "cams": 3}
    _corrupt(str(market / "query" / "0003_c1s1_000001_00.jpg"))
    bad = run_tool_here("check_dataset.py", *cmd, check=False)
    assert bad.returncode == 1 and "0003_c1s1_000001_00.jpg" in bad.stdout
    missing = run_tool_here("check_dataset.py", *cmd[:-4], "--data-root", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_cuhk03_layout(tmp_path):
    for sub, pids in (("train", [0, 1]), ("val", [0])):
        for pid in pids:
            for slot in (0, 3, 5, 9):
                _img(str(tmp_path / sub / f"{pid:04d}_{slot:02d}.jpg"))
    df = build_dataset("cuhk03", str(tmp_path))
    assert (df.split == "train").sum() == 8
    q, g = df[df.split == "query"], df[df.split == "gallery"]
    assert len(q) == 2 and set(q.camid) == {0} and len(g) == 2 and set(g.camid) == {1}


def test_cuhk01_split(tmp_path):
    for pid in range(1, 7):
        for m in range(1, 5):
            _img(str(tmp_path / "campus" / f"{pid:04d}{m:03d}.png"))
    df = build_dataset("cuhk01", str(tmp_path), num_train=3)
    assert sorted(df[df.split == "train"].pid.unique()) == [1, 2, 3]
    q = df[df.split == "query"]
    assert sorted(q.pid.unique()) == [4, 5, 6] and set(q.camid) == {0} and len(q) == 6
    seeded = build_dataset("cuhk01", str(tmp_path), num_train=3, split_seed=1)
    assert seeded[seeded.split == "train"].pid.nunique() == 3


def test_msmt17_lists(tmp_path):
    lines = {
        "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0"],
        "list_val.txt": ["0001/0001_000_02_0303morning_0016_0.jpg 1"],
        "list_query.txt": ["0000/0000_000_03_0303noon_0001_0.jpg 0"],
        "list_gallery.txt": ["0000/0000_001_05_0303noon_0002_0.jpg 0"],
    }
    for name, ls in lines.items():
        (tmp_path / name).write_text("\n".join(ls) + "\n")
        sub = "train" if name in ("list_train.txt", "list_val.txt") else "test"
        for line in ls:
            _img(str(tmp_path / sub / line.split()[0]))
    df = build_dataset("msmt17", str(tmp_path))
    assert df.groupby("split").size().to_dict() == {"gallery": 1, "query": 1, "train": 2}
    assert df[df.split == "gallery"].camid.item() == 4


def test_viper_and_image_folder_and_csv(tmp_path):
    for cam in ("cam_a", "cam_b"):
        for pid in range(4):
            _img(str(tmp_path / "viper" / cam / f"{pid:03d}_{45 if cam == 'cam_a' else 90}.bmp"))
    df = build_dataset("viper", str(tmp_path / "viper"), num_train=2)
    assert df.groupby("split").size().to_dict() == {"gallery": 2, "query": 2, "train": 4}

    for cls in ("ant", "bee", "cat", "dog"):
        for i in range(3):
            _img(str(tmp_path / "folder" / cls / f"{i}.png"), mode="L")  # grayscale is fine
    df = build_dataset("image_folder", str(tmp_path / "folder"))
    assert df.groupby("split").pid.nunique().to_dict() == {"test": 2, "train": 2}
    assert check_dataset(df, progress=False)["usable"]

    csv = tmp_path / "set.csv"
    pd.DataFrame({"path": ["folder/ant/0.png"], "pid": [1], "camid": [0], "split": ["train"]}).to_csv(csv, index=False)
    df = build_dataset("csv", str(csv))
    assert os.path.isabs(df.path.item()) and os.path.isfile(df.path.item())


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="valid names"):
        build_dataset("market", str(tmp_path))
    with pytest.raises(DatasetError, match="not found"):
        build_dataset("cuhk03", str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="split 'query' is empty"):
        validate_table(pd.DataFrame({"path": ["a"], "pid": [1], "camid": [0], "split": ["train"]}), require=("query",))
    with pytest.raises(DatasetError, match="unknown split"):
        validate_table(pd.DataFrame({"path": ["a"], "pid": [1], "camid": [0], "split": ["val"]}))
    _img(str(tmp_path / "m" / "bounding_box_train" / "garbage.jpg"))
    os.makedirs(tmp_path / "m" / "query")
    os.makedirs(tmp_path / "m" / "bounding_box_test")
    with pytest.raises(DatasetError, match="garbage.jpg"):
        build_dataset("market1501", str(tmp_path / "m"))


def test_relabel():
    labels, mapping = relabel(np.array([10, 3, 10]))
    assert labels.tolist() == [1, 0, 1] and mapping == {3: 0, 10: 1}


SHARED_CUHK03 = os.path.join(ROOT, "..", "shared", "data", "cuhk03")


@pytest.mark.skipif(not os.path.isdir(SHARED_CUHK03), reason="shared CUHK03 not present")
def test_shared_cuhk03_counts():
    df = build_dataset("cuhk03", SHARED_CUHK03)
    rep = check_dataset(df, decode=False)
    assert rep["splits"]["train"] == {"images": 7239, "ids": 743, "cams": 2}
    assert rep["splits"]["query"]["images"] == 451 and rep["splits"]["gallery"]["images"] == 487


def test_evaluation_only_and_class_level_sets_are_checked(tmp_path):
    for i in range(4):
        _img(str(tmp_path / "imgs" / f"{i}.png"))
    rows = {"path": [f"imgs/{i}.png" for i in range(4)], "pid": [1, 1, 2, 3], "camid": [0, 1, 0, 0]}
    reid = tmp_path / "reid.csv"  # query and gallery, no training split: an evaluation-only set
    pd.DataFrame({**rows, "split": ["query", "gallery", "gallery", "gallery"]}).to_csv(reid, index=False)
    rep = check_dataset(build_dataset("csv", str(reid)), progress=False)
    assert rep["usable"] and rep["usable_for"] == ["evaluation"]
    test = tmp_path / "test.csv"  # class-level test split; class 3 has one image
    pd.DataFrame({**rows, "split": ["test"] * 4}).to_csv(test, index=False)
    rep = check_dataset(build_dataset("csv", str(test)), progress=False)
    assert rep["usable_for"] == ["evaluation"]
    single = [p for p in rep["problems"] if p["kind"] == "class_without_match"]
    assert len(single) == 1 and len(single[0]["paths"]) == 2  # classes 2 and 3 are alone
    half = tmp_path / "half.csv"  # a query split without a gallery cannot be evaluated
    pd.DataFrame({**rows, "split": ["train", "train", "query", "query"]}).to_csv(half, index=False)
    rep = check_dataset(build_dataset("csv", str(half)), progress=False)
    assert not rep["usable"] and "'gallery' has none" in rep["problems"][0]["message"]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    from reid_htg.data.dataset import load_image

    a = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (64, 1))
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    x = load_image(str(tmp_path / "g16.png"), (64, 32))
    assert x.shape == (3, 64, 32) and int(x.min()) == 0 and int(x.max()) == 255
    assert len(np.unique(x[0, 0].numpy())) > 16  # a ramp, not a white image


def test_broken_links_and_train_test_leaks_are_reported(market, tmp_path):
    """--no-decode still finds a path that is not a file (a broken symlink); a training image linked or copied
    byte for byte into an evaluation split is a leak."""
    import shutil

    from conftest import run_tool_here

    train_img = market / "bounding_box_train" / "0002_c1s1_000451_03.jpg"
    link = market / "bounding_box_test" / "0003_c1s1_000007_00.jpg"
    os.symlink(tmp_path / "gone.jpg", link)
    res = run_tool_here("check_dataset.py", "--dataset", "market1501", "--data-root", market, "--no-decode", check=False)
    assert res.returncode == 1 and "broken link" in res.stdout and link.name in res.stdout
    link.unlink()
    os.symlink(train_img, link)  # the same file under a test name
    report = check_dataset(build_dataset("market1501", str(market)), decode=False, progress=False)
    leak = [p for p in report["problems"] if p["kind"] == "leak"]
    assert leak and leak[0]["paths"] == [str(link)] and not report["usable"]
    link.unlink()
    shutil.copy(train_img, market / "query" / "0003_c2s1_000009_00.jpg")  # a byte-for-byte copy
    report = check_dataset(build_dataset("market1501", str(market)), decode=False, progress=False)
    assert [p["paths"] for p in report["problems"] if p["kind"] == "leak"] == [[str(market / "query" / "0003_c2s1_000009_00.jpg")]]
