import safealign.progress as progress


def test_off_a_terminal_a_task_writes_plain_lines_as_it_goes(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    with progress.progress_bar() as bar:
        task = bar.add_task("guard features (5 pairs, fp32)", total=5)
        for _ in range(3):
            bar.advance(task)
        bar.update(task, completed=5)
    err = capsys.readouterr().err
    assert "guard features (5 pairs, fp32): 3/5 (0:00)" in err  # written before the bar ends
    assert "guard features (5 pairs, fp32): 5/5" in err


def test_lines_wait_for_the_interval(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY", 3600.0)
    with progress.progress_bar() as bar:
        task = bar.add_task("training", total=None)
        for _ in range(10):
            bar.advance(task)
    err = capsys.readouterr().err
    assert "training: " not in err  # nothing before an hour has passed; rich's own final render stays


def test_a_disabled_bar_writes_nothing(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    with progress.progress_bar(disable=True) as bar:
        task = bar.add_task("quiet", total=2)
        bar.advance(task)
    assert "quiet" not in capsys.readouterr().err
