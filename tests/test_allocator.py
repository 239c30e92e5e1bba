"""ssll.allocator: large blocks reused from malloc's heap, the user's own policy respected."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from ssll import allocator
from ssll.cli import HEAVY_COMMANDS, build_parser

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a 64 MiB block written and freed ten times: the page faults of the last eight allocations. (torch asks for 64-byte
# aligned blocks, whose padding can keep a freed block from fitting the next one until two freed blocks have merged;
# a plain malloc shows the policy without that.)
_FAULTS = """
import ctypes, resource
from ssll.allocator import reuse_large_blocks
set_to = reuse_large_blocks()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 64 * 2**20
def cycle():
    p = libc.malloc(n)
    assert p
    ctypes.memset(p, 1, n)
    libc.free(p)
cycle()
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    cycle()
print(set_to, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env_extra: dict[str, str]) -> tuple[int, int]:
    env = allocator.without_policy()
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    set_to, faults = out.stdout.split()
    return int(set_to), int(faults)


@pytest.mark.skipif(not GLIBC, reason="the policy is glibc's mallopt")
def test_a_freed_large_block_is_reused_without_page_faults() -> None:
    set_to, faults = _faults({})
    assert set_to >= 64 * 2**20  # above the block: it comes from the heap
    # from mmap every allocation faults its 16,384 pages of 4 KiB in afresh (131,072 in all); from the kept heap the
    # block is reused
    assert faults < 2000, faults


@pytest.mark.skipif(not GLIBC, reason="the policy is glibc's mallopt")
def test_the_users_own_policy_is_left_alone() -> None:
    set_to, _ = _faults({"SSLL_ALLOCATOR": "system"})
    assert set_to == 0
    set_to, _ = _faults({"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert set_to == 0


def test_user_policy_names_the_variable() -> None:
    assert allocator.user_policy({}) is None
    assert allocator.user_policy({"SSLL_ALLOCATOR": "System"}) == "SSLL_ALLOCATOR"
    assert allocator.user_policy({"SSLL_ALLOCATOR": "ssll"}) is None
    assert allocator.user_policy({"MALLOC_TRIM_THRESHOLD_": "0"}) == "MALLOC_TRIM_THRESHOLD_"
    assert allocator.user_policy({"MALLOC_ARENA_MAX": "2"}) is None  # arenas: not the policy's business
    assert allocator.user_policy({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) == "GLIBC_TUNABLES"
    assert allocator.user_policy({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}) is None


def test_reuse_large_blocks_answers_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("SSLL_ALLOCATOR", "system")
    assert allocator.reuse_large_blocks() == 0
    monkeypatch.delenv("SSLL_ALLOCATOR")
    assert allocator.reuse_large_blocks() == 0  # the first answer stands for the process


def test_the_heavy_commands_exist() -> None:
    names = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert HEAVY_COMMANDS <= names, HEAVY_COMMANDS - names


def test_without_policy_takes_out_every_policy_variable() -> None:
    env = {"PATH": "/bin", "SSLL_ALLOCATOR": "system", "MALLOC_ARENA_MAX": "2", "MALLOC_TOP_PAD_": "1",
           "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "OMP_NUM_THREADS": "2"}
    kept = allocator.without_policy(env)
    assert kept == {"PATH": "/bin", "OMP_NUM_THREADS": "2"}
    assert allocator.user_policy(kept) is None
    assert "SSLL_ALLOCATOR" in env  # the caller's mapping is left as it was
