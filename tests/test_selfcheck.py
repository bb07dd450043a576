"""The method against a bare loop (probes/selfcheck.py): each check runs and prints a ratio; bad input is one
line and exit 2."""

from __future__ import annotations

import pytest
from helpers import cli

from probes.selfcheck import main


@pytest.mark.parametrize(
    ("check", "size"), [("matmul", "64"), ("bandwidth", "1048576"), ("collectives", "65536")]
)
def test_each_check_compares_the_probe_with_a_bare_loop(capsys, check, size):
    rc = main([check, "--device", "cpu", "--size", size, "--rounds", "1", "--seconds", "0.05"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "round 1: probe" in out and "median: probe" in out and "ratio" in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["matmul", "--seconds", "0"], "must be greater than 0"),
        (["matmul", "--seconds", "-1"], "must be greater than 0"),
        (["matmul", "--seconds", "nan"], "must be a finite number"),
        (["matmul", "--seconds", "inf"], "must be a finite number"),
        (["matmul", "--rounds", "0"], "must be at least 1"),
        (["bandwidth", "--size", "3"], "at least 4096 bytes"),
        (["bandwidth", "--size", "1000000000000000"], "over half the free memory"),
        (["matmul", "--size", "10000000"], "over half the free memory"),
        (["flops"], "invalid choice"),
        (["matmul", "--device", "gpu"], "expected auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, args, expected):
    assert cli(main, [*args, "--device", "cpu"] if "--device" not in args else args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
