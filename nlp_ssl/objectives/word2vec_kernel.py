"""The fused CPU word2vec kernels (``word2vec_kernel.cpp``), compiled on first use and cached.

word2vec.c and gensim train one word at a time with plain SGD straight into the tables; on a CPU that is
faster than any batched formulation, because each word touches its window's and its output rows once
instead of making a dozen memory-bound passes over ``[N, d]`` batches. The kernels do that in C++ over the
torch tables (the source documents the algorithm), threaded with torch's intra-op pool.

The source is compiled with the machine's C++ compiler by :func:`torch.utils.cpp_extension.load` the first
time a run asks for it (a few seconds) into torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``), under a name keyed by this CPU's instruction set (the build is tuned with
``-march=native``). :func:`load_kernel` raises :class:`KernelUnavailable` with the reason when it cannot
be built; ``word2vec.kernel: auto`` then falls back to the batched torch path.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("word2vec_kernel.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp"]  # OpenMP: at::parallel_for's threads (torch's own runtime)


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot be built or loaded here (no compiler, no headers); the message says why."""


def _cpu_fingerprint() -> str:
    """A short hash of this CPU's instruction set, so a shared cache never serves a build for another CPU."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line for line in info if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha1(f"{platform.machine()} {flags}".encode()).hexdigest()[:10]


def _name() -> str:
    return f"nlp_ssl_word2vec_{_cpu_fingerprint()}"


def needs_build() -> bool:
    """Whether :func:`load_kernel` will compile (no build in the cache, or one older than the source)."""
    from torch.utils import cpp_extension

    try:  # a private helper of torch's; without it, say nothing rather than guess
        folder = Path(cpp_extension._get_build_directory(_name(), verbose=False))
    except Exception:  # noqa: BLE001
        return False
    built = folder / f"{_name()}.so"
    return not built.is_file() or built.stat().st_mtime < SOURCE.stat().st_mtime


@functools.lru_cache(maxsize=None)
def load_kernel() -> Any:
    """Build (once per machine) and load the kernels; returns the ``torch.ops.nlp_ssl_word2vec`` namespace.

    Raises:
        KernelUnavailable: no C++ toolchain, or the build failed (with the first line of the error).
    """
    from torch.utils import cpp_extension

    # The build runs `ninja`, which pip installs next to this interpreter: found even when the
    # environment is not activated.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    try:
        cpp_extension.load(name=_name(), sources=[str(SOURCE)],
                           extra_cflags=FLAGS, is_python_module=False, verbose=False)
    except Exception as err:  # noqa: BLE001 - any build failure means: use the torch path
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise KernelUnavailable(f"the fused word2vec kernel could not be built ({first[:160]})") from err
    return torch.ops.nlp_ssl_word2vec


def alias_table(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker's alias table of ``probs`` (``(V,)`` float64, summing to 1): ``(accept (V,) float64, alias (V,) int64)``.

    Bucket ``b`` drawn uniformly is kept with probability ``accept[b]``, else replaced by ``alias[b]``: an
    exact O(1) sampler of ``probs`` (Walker 1977; Vose 1991 for the construction).
    """
    accept, alias = load_kernel().alias_table(probs.to(torch.float64).contiguous())
    return accept, alias


def cbow_step(ids: torch.Tensor, sentence: torch.Tensor, radius: torch.Tensor, w_in: torch.Tensor,
              w_out: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor], negative: int, lr: float, seed: int,
              full_context_update: bool = True, update: bool = True) -> tuple[float, int]:
    """CBOW with negative sampling over one stream, word2vec.c's way (Mikolov et al. 2013).

    For each centre ``i`` with ``c >= 1`` contexts (the positions of its sentence within ``radius[i]``), in
    stream order: ``h = (1/c) sum_t w_in[ids[t]]``, then the logistic terms of ``h`` against
    ``w_out[ids[i]]`` (label 1) and ``negative`` noise words (label 0; a draw equal to the centre is
    skipped), each stepping its output row by ``lr * (label - sigma(h . o)) h``; then every context row takes
    ``lr * sum (label - sigma) o`` (``full_context_update``, as word2vec.c and gensim) or ``1/c`` of it.

    Args:
        ids, sentence, radius: ``(N,)`` int64 kept word ids in stream order, their sentence ids (windows
            stay inside a sentence; a sentence's positions are contiguous) and dynamic window radii.
        w_in, w_out: ``(V, d)`` float32 contiguous tables, updated in place unless ``update=False``.
        noise: the noise distribution's :func:`alias_table`.
        seed: the step's key for drawing the negatives.

    Returns:
        ``(loss summed over centres, centres with at least one context)``; each centre's loss is taken at
        the rows as they were when it was trained.
    """
    out = load_kernel().cbow_step(ids, sentence, radius, w_in, w_out, *noise, negative, lr, seed,
                                  full_context_update, update)
    return float(out[0]), int(out[1])


def skipgram_step(ids: torch.Tensor, sentence: torch.Tensor, radius: torch.Tensor, w_in: torch.Tensor,
                  w_out: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor], negative: int, window: int,
                  pairs_per_draw: int, lr: float, seed: int, update: bool = True) -> tuple[float, int]:
    """Skip-gram with negative sampling over one stream, one input word at a time.

    For each position ``t`` in stream order, with ``c_t`` the centres whose window holds it: the logistic
    terms of ``w_in[ids[t]]`` against the ``c_t`` centres' output rows (label 1) and
    ``m = negative * ceil(c_t / pairs_per_draw)`` noise words drawn for ``t`` (label 0), each weighted
    ``c_t * negative / m``. In expectation that is word2vec's loss, whose ``c_t`` pairs each have
    ``negative`` noise terms (Mikolov et al. 2013); ``pairs_per_draw=1`` draws as many noise words as
    word2vec, larger values draw fewer, heavier ones (less work, more variance). Each term steps its
    output row; ``w_in[ids[t]]`` takes the summed error after all of its terms. ``window`` is the largest
    radius. Other arguments as in :func:`cbow_step`.

    Returns:
        ``(loss summed over pairs, pairs)``.
    """
    out = load_kernel().skipgram_step(ids, sentence, radius, w_in, w_out, *noise, negative, window,
                                      pairs_per_draw, lr, seed, update)
    return float(out[0]), int(out[1])
