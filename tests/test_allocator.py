"""The service's allocator setting: a freed large block goes back to the system, even after glibc has seen one."""
import subprocess
import sys

from tests.conftest import REPO

# In a fresh process: free a 20 MB block once (glibc then raises its threshold to 20 MB), allocate another one in a
# thread, as a request or a build does, free it, and print how many MB the process kept.
PROBE = """
import sys, threading
import numpy as np
from kb.allocator import return_large_blocks

def rss_mb():
    return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) // 1024

print(return_large_blocks() if sys.argv[1] == "set" else None)
kept = []

def work():
    block = np.ones(20 * 2**20 // 8)
    del block
    before = rss_mb()
    block, later = np.ones(20 * 2**20 // 8), np.ones(1000)
    del block
    kept.append(rss_mb() - before)

thread = threading.Thread(target=work)
thread.start()
thread.join()
print(kept[0])
"""


def kept_mb(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_a_freed_large_block_goes_back_to_the_system():
    """0-1 MB kept (the page-rounded RSS of the small allocations around it), against 20 MB without the setting."""
    applied, kept = kept_mb("set")
    assert applied == "True" and kept <= 2


def test_without_it_glibc_keeps_the_block():
    """What the setting is for (and proof that the probe can see it): glibc's default keeps the second block."""
    assert kept_mb("default")[1] >= 15
