"""Large tensors from memory the process keeps, not from a fresh mapping each time (glibc's malloc).

glibc serves every allocation above its mmap threshold (dynamic, at most 32 MB) with a new ``mmap`` and returns it
to the kernel on free, so each such tensor is faulted in and zeroed page by page when first written. A training step
of the built-in model allocates several of them (the embedding's dense gradient, 49,152 x 576 floats; the logits
and their log-softmax and gradient at every scored position), and so does every evaluation pass. On this project's
2-core VMs a first touch of fresh memory ran at about a tenth of the speed of writing memory already mapped (113 MB:
38-46 ms against 3.6 ms). :func:`keep_freed_memory` tells glibc to serve large allocations from its heap and keep
freed memory there, so later steps reuse pages that are already mapped: on a 2-core Zen 5 EPYC full fine-tuning
steps of the demo took 0.84x their time (5 alternating process pairs, every pair faster), the forgetting guard's pass
0.91x, the demo recipe's whole training 0.71-0.78x (the same stop and choice), at 1.08-1.19x the peak resident
memory (benchmarks/README.md, "Freed memory kept"). That higher resident set is the price: freed memory stays
with the process. The command line applies it to its own process (``smalltune`` commands); a program that imports
smalltune decides for itself.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
KEEP_BYTES = 2**31 - 1  # free memory at the top of the heap kept before trimming: mallopt takes a C int


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed memory in the process; True where it applied (Linux with
    glibc). Process-wide and for the rest of the process."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
