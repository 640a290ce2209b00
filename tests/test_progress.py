from reid_htg.utils.progress import progress


def test_plain_progress_lines_when_not_a_terminal(capsys):
    bar = progress(range(5), desc="caching images", every=0.0)  # pytest's stderr is not a terminal
    bar.set_postfix({"loss": "1.0"})
    assert list(bar) == [0, 1, 2, 3, 4]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5 and lines[-1].startswith("caching images: 5/5 (") and "/s" in lines[-1] and "loss=1.0" in lines[-1]
    assert "ETA" in lines[0]


def test_silent_when_disabled(capsys):
    assert list(progress(range(3), desc="x", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
