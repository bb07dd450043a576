"""bench.toml loading: the shipped file, and every bad form as a one-line error naming file and key."""

from __future__ import annotations

import pytest
from helpers import REPO

from probes.all import main as all_main
from probes.config import ConfigError, load_config, shipped_defaults

GOOD = """
default_profile = "quick"
[timing]
warmup_s = 0.0
[bandwidth]
patterns = ["copy"]
[profiles.quick]
probes = ["bandwidth"]
[profiles.quick.bandwidth]
working_set_cache_multiples = [0.5, 1]
[profiles.full]
"""


def write(tmp_path, text: str):
    p = tmp_path / "bench.toml"
    p.write_text(text)
    return p


def test_shipped_bench_toml_loads_every_profile():
    quick = load_config(REPO / "bench.toml")
    assert quick.profile == "quick"
    assert set(quick.probes) == {
        "bandwidth",
        "hostlink",
        "latency",
        "matmul",
        "collectives",
        "decode",
        "health",
    }
    assert quick.health.soak_s < load_config(REPO / "bench.toml", "full").health.soak_s
    cpu = load_config(REPO / "bench.toml", device_kind="cpu")
    assert cpu.device_kind == "cpu" and max(cpu.matmul.square_sizes) < max(quick.matmul.square_sizes)
    full = load_config(REPO / "bench.toml", "full")
    assert len(full.bandwidth.working_set_cache_multiples) > len(quick.bandwidth.working_set_cache_multiples)
    assert full.timing.case_budget_s > quick.timing.case_budget_s


def test_profile_overrides_section_defaults(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.bandwidth.patterns == ("copy",)  # from [bandwidth]
    assert cfg.bandwidth.working_set_cache_multiples == (0.5, 1.0)  # from the profile, ints become floats
    assert cfg.timing.warmup_s == 0.0
    full = load_config(write(tmp_path, GOOD), "full")
    assert full.probes == (
        "bandwidth",
        "hostlink",
        "latency",
        "matmul",
        "collectives",
        "decode",
        "health",
    )  # all
    assert full.bandwidth.working_set_cache_multiples == tuple(
        shipped_defaults()["bandwidth"]["working_set_cache_multiples"]
    )
    with pytest.raises(AttributeError):
        cfg.timing.warmup_s = 1.0  # frozen


BAD = [
    ("[timing\nwarmup_s = 1", "TOML syntax error"),
    (GOOD + "\n[bogus]\n", "bogus: unknown key"),
    (GOOD.replace("warmup_s = 0.0", "warmup_s = 0.0\nwarmpu_s = 1"), "timing.warmpu_s: unknown key"),
    (
        GOOD.replace("warmup_s = 0.0", 'warmup_s = "fast"'),
        "timing.warmup_s: expected a number, got str 'fast'",
    ),
    (
        GOOD.replace("[0.5, 1]", "[0.5, -1]"),
        "profiles.quick.bandwidth.working_set_cache_multiples: must be positive",
    ),
    (
        GOOD.replace("[0.5, 1]", "0.5"),
        "profiles.quick.bandwidth.working_set_cache_multiples: expected a list",
    ),
    (GOOD.replace('patterns = ["copy"]', 'patterns = ["cpoy"]'), "bandwidth.patterns: unknown value 'cpoy'"),
    (
        GOOD.replace('probes = ["bandwidth"]', 'probes = ["matmul9"]'),
        "profiles.quick.probes: unknown value 'matmul9'",
    ),
    (
        GOOD.replace('probes = ["bandwidth"]', 'probes = ["bandwidth"]\nbandwith = 1'),
        "profiles.quick.bandwith: unknown key",
    ),
    (
        GOOD.replace('default_profile = "quick"', 'default_profile = "qiuck"'),
        "default_profile: unknown profile 'qiuck'",
    ),
    (
        GOOD.replace("warmup_s = 0.0", "warmup_s = 0.0\nmin_reps = 10\nmax_reps = 5"),
        "min_reps: 10 is larger than max_reps 5",
    ),
    (
        GOOD.replace("warmup_s = 0.0", "warmup_s = 0.0\nmin_reps = 2.5"),
        "timing.min_reps: expected an integer",
    ),
    ("[timing]\n", "profiles: at least one"),
    (GOOD + "\n[profiles.full.tpu.matmul]\n", "profiles.full.tpu: unknown key"),
    (
        GOOD + "\n[profiles.full.cpu.matmul]\nsquare_sizes = [0]\n",
        "profiles.full.cpu.matmul.square_sizes: must be positive",
    ),
    (GOOD + "\n[profiles.full.gpu.bogus]\n", "profiles.full.gpu.bogus: unknown key"),
    (GOOD + '\n[matmul]\ndecode_models = ["llama-9000"]\n', "unknown model 'llama-9000'"),
    (GOOD + '\n[matmul]\ndtypes = ["fp4"]\n', "matmul.dtypes: unknown value 'fp4'"),
    (GOOD + '\n[collectives]\np2p_pairs = "star"\n', "collectives.p2p_pairs: unknown value 'star'"),
]


def test_device_kind_overrides_apply_last(tmp_path):
    text = GOOD + "\n[profiles.quick.cpu.bandwidth]\nworking_set_cache_multiples = [2]\n"
    p = write(tmp_path, text)
    assert load_config(p).bandwidth.working_set_cache_multiples == (0.5, 1.0)
    assert load_config(p, device_kind="gpu").bandwidth.working_set_cache_multiples == (0.5, 1.0)
    assert load_config(p, device_kind="cpu").bandwidth.working_set_cache_multiples == (2.0,)


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_files_are_one_line_errors_naming_file_and_key(tmp_path, text, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert msg.startswith(str(p) + ": ")
    assert expected in msg
    assert "\n" not in msg


def test_unknown_profile_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="profile 'nope' is not defined"):
        load_config(write(tmp_path, GOOD), "nope")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--profile", "nope"], "profile 'nope' is not defined"),
        (["--device", "tpu"], "--device 'tpu': expected auto, cpu, cuda or cuda:N"),
        (["--only", "bandwith"], "--only bandwith: unknown probe"),
        (["--skip", "bandwidth,hostlink,latency,matmul,collectives,decode,health"], "nothing to run"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, expected):
    rc = all_main(["--config", str(REPO / "bench.toml"), "--out", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and expected in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing half-ran


def test_cli_bad_config_file_exits_2(tmp_path, capsys):
    rc = all_main(["--config", str(write(tmp_path, "[timing\n")), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "TOML syntax error" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cuda_device_without_gpu_is_bad_input(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rc = all_main(["--device", "cuda", "--out", str(tmp_path)])
    assert rc == 2
    assert "no CUDA/ROCm device is visible" in capsys.readouterr().err
