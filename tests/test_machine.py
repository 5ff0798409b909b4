"""benchmarks/machine.py: what every benchmark JSON says about the machine it ran on."""

from __future__ import annotations

import pytest
from conftest import benchmark_script

machine = benchmark_script("machine")

CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True), ("avx512f avx512_vnni", False)],
    ids=["AVX-512 BF16", "AMX", "neither"],
)
def test_cpu_has_bf16_reads_the_flags_of_proc_cpuinfo(tmp_path, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert machine.cpu_has_bf16(cpuinfo) is expected


def test_cpu_has_bf16_is_unknown_without_proc_cpuinfo_or_its_flags(tmp_path):
    assert machine.cpu_has_bf16(tmp_path / "missing") is None
    (tmp_path / "no-flags").write_text("processor\t: 0\n")
    assert machine.cpu_has_bf16(tmp_path / "no-flags") is None


def test_every_benchmark_records_whether_the_cpu_has_bf16():
    assert machine.machine()["cpu_bf16"] is machine.cpu_has_bf16()
