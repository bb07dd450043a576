"""Launching collectives ranks: real 2-rank gloo runs with checks, injected corruption, hangs and deaths torn
down in time, and bad launch flags refused with exit 2."""

from __future__ import annotations

import multiprocessing
import socket
import time

import pytest
import torch
from helpers import cli

from probes import launch, ranks
from probes.all import main as all_main
from probes.config import load_config
from probes.context import Context
from probes.nvml import Nvml


def ctx_for(path) -> Context:
    return Context(cfg=load_config(path), devices=[torch.device("cpu")], nvml=Nvml())


GLOO2 = ranks.Launch(world_size=2, backend="gloo", device_kind="cpu", port=0)


def test_real_gloo_collectives_are_measured_and_verified(tiny):
    ctx = ctx_for(tiny)
    ms = launch.launch_ranks(ctx, GLOO2, link="loopback")
    assert len(ms) == len(ranks.plan(ctx.cfg.collectives))
    assert all(m.status == "ok" for m in ms), [(m.case, m.error) for m in ms if m.status != "ok"]
    for m in ms:
        p = m.params
        assert m.verification == {"status": "passed", "ranks": 2}
        assert p["time_s"] == max(p["rank_median_s"])  # the slowest rank is the truth
        assert p["algbw_bytes_per_s"] == pytest.approx(p["size_bytes"] / p["time_s"])
        factor = 1.0 if p["op"] == "all_reduce" else 0.5  # n = 2
        assert m.value == pytest.approx(p["algbw_bytes_per_s"] * factor)
    heads = {m.headline for m in ms if m.headline}
    assert heads == {
        f"{op}_busbw_{d}"
        for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
        for d in ("fp32", "bf16")
    }
    assert not multiprocessing.active_children()


def test_a_corrupted_result_is_an_error_naming_the_rank(tiny):
    ctx = ctx_for(tiny)
    ms = launch.launch_ranks(ctx, GLOO2, fault={"rank": 1, "kind": "corrupt"})
    assert ms and all(m.status == "error" for m in ms)
    assert "rank 1: result: 1 of" in ms[0].error and ms[0].params["wrong_ranks"] == [1]
    assert ms[0].value is None


@pytest.mark.parametrize(("kind", "expected"), [("hang", "timeout"), ("die", "exited with code 3")])
def test_a_hung_or_dead_rank_is_torn_down_and_recorded(tiny, kind, expected):
    ctx = ctx_for(tiny)
    t0 = time.monotonic()
    ms = launch.launch_ranks(ctx, GLOO2, fault={"rank": 1, "kind": kind})
    elapsed = time.monotonic() - t0
    first, rest = ms[0], ms[1:]
    assert first.status == "error" and expected.lower() in first.error.lower(), first.error
    assert all(m.status == "error" and m.error.startswith("not run:") for m in rest)
    # spawn + import (a few s) + the 4 s collective timeout + teardown; never the rank's hour of sleep
    assert elapsed < 4.0 + 25.0
    time.sleep(0.5)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--world-size", "0"], "--world-size: '0': must be at least 1"),
        (["--world-size", "two"], "--world-size: 'two' is not an integer"),
        (["--backend", "nccl"], "--backend nccl: NCCL runs on GPUs"),
        (["--backend", "mpi"], "--backend mpi: expected auto, gloo or nccl"),
        (["--port", "70000"], "--port: '70000': a port is 1..65535"),
        (["--port", "-1"], "--port: '-1': must be 0 or more"),
    ],
)
def test_bad_launch_flags_exit_2(tmp_path, capsys, args, expected):
    rc = cli(all_main, ["--only", "collectives", "--device", "cpu", "--out", str(tmp_path), *args])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_a_port_in_use_exits_2(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = all_main(
            ["--only", "collectives", "--device", "cpu", "--out", str(tmp_path), "--port", str(port)]
        )
    assert rc == 2 and f"--port {port}: already in use" in capsys.readouterr().err
