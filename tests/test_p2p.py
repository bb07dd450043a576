"""The link between two GPUs from NVML (a fake NVML returning the real enum values), and the GPU pair matrix."""

from __future__ import annotations

import torch

from probes.p2p import link_label, pair_link


class FakeNvml:
    """NVML as an 8x H100 SXM node answers it: NVLink P2P OK, 18 active links, version enum 6 (4.0)."""

    available = True

    def __init__(self, nvlink: bool = True, version_enum: int = 6, ancestor: int = 30) -> None:
        self.nvlink, self.version_enum, self.ancestor = nvlink, version_enum, ancestor

    def handle(self, device: torch.device) -> str:
        return f"h{device.index}"

    def const(self, name: str, default: int) -> int:
        return default

    def call(self, fn: str, *args: object) -> object:
        return {
            "nvmlDeviceGetP2PStatus": 0 if self.nvlink else 2,  # NVML_P2P_STATUS_OK / _NOT_SUPPORTED
            "nvmlDeviceGetNvLinkState": 1,
            "nvmlDeviceGetNvLinkVersion": self.version_enum,
            "nvmlDeviceGetTopologyCommonAncestor": self.ancestor,  # NVML_TOPOLOGY_HOSTBRIDGE
        }[fn]


class Ctx:
    def __init__(self, nvml: FakeNvml) -> None:
        self.nvml = nvml


A, B = torch.device("cuda", 0), torch.device("cuda", 1)


def test_nvlink_pair_is_named_by_generation_not_the_raw_enum():
    assert pair_link(Ctx(FakeNvml()), A, B) == "NVLink 4 (18 active links on cuda:0)"
    assert pair_link(Ctx(FakeNvml(version_enum=5)), A, B).startswith("NVLink 3 ")  # A100


def test_pcie_pair_names_the_path_and_the_label_joins_pairs():
    assert pair_link(Ctx(FakeNvml(nvlink=False)), A, B) == "PCIe via PCIe host bridge"
    assert link_label(Ctx(FakeNvml()), [A, B, torch.device("cuda", 2)]) == "NVLink 4"


def test_ring_pairs_exercise_every_gpus_neighbours_in_3n_cases():
    from probes.p2p import ordered_pairs

    assert len(ordered_pairs(8, "all")) == 56
    ring = ordered_pairs(8, "ring")
    assert len(ring) == 16 and (7, 0) in ring and (0, 7) in ring and (0, 2) not in ring
    assert {a for a, _ in ring} == set(range(8))
    assert ordered_pairs(2, "ring") == [(0, 1), (1, 0)]  # two GPUs: one pair, not the same pair twice
    assert ordered_pairs(3, "ring") == ordered_pairs(3, "all")
