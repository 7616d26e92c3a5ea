"""tune_cpu_allocator: large tensors reuse freed memory instead of faulting in fresh pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB tensor six times and prints the page faults of the last three.
PROBE = """
import resource, torch
from esrforge.infer.device import tune_cpu_allocator
applied = tune_cpu_allocator()
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(16 << 20)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, min(faults[3:]))
"""

PAGES = (64 << 20) // 4096

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc"
)


def probe(allocator: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "ESRFORGE_CPU_ALLOCATOR"}
    if allocator:
        env["ESRFORGE_CPU_ALLOCATOR"] = allocator
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    applied, faults = r.stdout.split()
    return applied == "True", int(faults)


@glibc_only
def test_freed_memory_is_reused_and_system_opts_out():
    applied_sys, faults_sys = probe("system")
    assert not applied_sys  # the opt-out leaves malloc alone
    if faults_sys < PAGES // 2:
        pytest.skip(f"this kernel maps fresh blocks cheaply ({faults_sys} faults per 64 MiB): nothing to compare")
    applied, faults = probe(None)
    assert applied
    assert faults < PAGES // 100, f"{faults} page faults re-allocating 64 MiB (untuned: {faults_sys})"


def test_refuses_quietly_where_it_cannot_apply(monkeypatch):
    from esrforge.infer import device

    monkeypatch.setattr(device.sys, "platform", "darwin")
    assert device.tune_cpu_allocator() is False
