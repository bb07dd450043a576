"""probes.acceptance: the steps run, the summary says what passed and what to look at, bad flags are one line."""

from __future__ import annotations

import pytest
from helpers import cli

from probes import acceptance


def test_the_profile_step_and_the_summary_on_a_cpu(tiny_config, tmp_path, capsys):
    out = tmp_path / "acc"
    rc = acceptance.main(
        [
            "--device",
            "cpu",
            "--skip",
            "tests,selfcheck",
            "--config",
            str(tiny_config),
            "--profile",
            "tiny",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "PASS  profile" in text and "run document" in text and "nothing to look at" in text
    assert (out / "acceptance.txt").read_text().strip() == text.strip()


def test_a_failed_step_is_a_fail_with_the_reason():
    s = acceptance.Step(
        "selfcheck", ok=False, seconds=2.0, lines=["selfcheck matmul: probe / bare loop = 0.80"]
    )
    s.look_at.append("selfcheck matmul: ratio 0.80 outside 0.95-1.5")
    text = acceptance.summary([s])
    assert "FAIL  selfcheck" in text and "what to look at:" in text and "ratio 0.80" in text


@pytest.mark.parametrize(
    ("argv", "msg"),
    [(["--skip", "warmup"], "--skip 'warmup'"), (["--step-timeout-s", "0"], "--step-timeout-s")],
)
def test_bad_flags_are_one_line(capsys, argv, msg):
    rc = cli(acceptance.main, argv)
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1
