"""Freed memory kept by the process (smalltune/memory.py): large tensors stop being fresh mappings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smalltune import memory

MAPPED_BYTES = """
import ctypes, sys, torch
from smalltune.memory import keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "kept" else False
before = libc.mallinfo2().hblkhd  # bytes held in blocks mapped on their own
x = torch.ones(64 * 2**20 // 4)  # 64 MB, above glibc's largest mmap threshold (32 MB)
print(applied, (libc.mallinfo2().hblkhd - before) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or memory.platform.libc_ver()[0] != "glibc",
                    reason="glibc's malloc only")
def test_a_large_tensor_is_a_new_mapping_by_default_and_not_once_freed_memory_is_kept():
    def mapped_mb(arm: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", MAPPED_BYTES, arm], capture_output=True, text=True, check=True)
        applied, mb = out.stdout.split()
        return applied, int(mb)

    assert mapped_mb("default") == ("False", 64)
    assert mapped_mb("kept") == ("True", 0)


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))
    assert memory.keep_freed_memory() is False


def test_the_command_line_keeps_freed_memory_in_its_process(monkeypatch, tmp_path):
    from smalltune import cli

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    cli.main(["versions", str(tmp_path)])  # any command (this one fails fast: no versions there)
    assert calls == [1]
