"""The CUDA kernel sources (csrc/cuda/*.cu) and how they become CuPy modules.

CuPy compiles the kernels at run time, so the `.cu` / `.cuh` files must be readable from the
installed package. `source_dir()` looks, in order, at `$MINITL_CUDA_SRC`, at `minitl/cuda_kernels/`
(where the wheel build copies them) and at `csrc/cuda/` of a source checkout (editable installs
and running from the repository).

`read_source` pastes local `#include "x.cuh"` headers into the text: CuPy's on-disk kernel cache
is keyed by the source string, so a header edit must change that string or a stale binary would
be loaded. `load_module` builds (and memoizes) a `cupy.RawModule` with `name_expressions` for the
template instantiations asked for; `load_module_for_arch` compiles through NVRTC directly for an
architecture CuPy would not pick by itself (sm_90a, which wgmma needs).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ENV_VAR = "MINITL_CUDA_SRC"
# Options for every module: C++17 (lambdas and constexpr in the templates), and only the
# instantiations named in name_expressions (the files list all of them for the nvcc check).
BASE_OPTIONS = ("-std=c++17", "-DMINITL_NO_INSTANTIATIONS")
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)

_modules: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def candidate_dirs() -> list[Path]:
    """Where the kernel sources may be, in the order they are tried."""
    here = Path(__file__).resolve().parent  # minitl/backend
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs.append(here.parent / "cuda_kernels")  # installed wheel: package data
    dirs.append(here.parent.parent / "csrc" / "cuda")  # source checkout
    return dirs


def source_dir() -> Path:
    """The directory holding the `.cu` files; FileNotFoundError naming every place tried."""
    tried = candidate_dirs()
    for d in tried:
        if (d / "sgemm.cu").is_file():
            return d
    raise FileNotFoundError(
        "minitl: CUDA kernel sources (sgemm.cu, ...) not found; looked in "
        + ", ".join(str(d) for d in tried)
        + f". Set {ENV_VAR} to a copy of csrc/cuda or reinstall minitl.")


def read_source(name: str, directory: Path | None = None) -> str:
    """The text of `name` with its local includes pasted in (each header once)."""
    d = source_dir() if directory is None else directory
    seen: set[str] = set()

    def expand(fname: str) -> str:
        text = (d / fname).read_text()

        def sub(m: re.Match[str]) -> str:
            inc = m.group(1)
            if inc in seen:
                return f"// (already included: {inc})"
            seen.add(inc)
            return f"// ---- begin {inc}\n{expand(inc)}\n// ---- end {inc}"

        return _INCLUDE.sub(sub, text)

    return expand(name)


def load_module(name: str, name_expressions: Sequence[str] = (),
                options: Sequence[str] = ()) -> Any:
    """A `cupy.RawModule` for csrc/cuda/`name`, built once per (file, names, options)."""
    import cupy

    key = ("raw", name, tuple(name_expressions), tuple(options))
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            mod = cupy.RawModule(code=read_source(name), options=BASE_OPTIONS + tuple(options),
                                 name_expressions=tuple(name_expressions) or None)
            _modules[key] = mod
    return mod


def kernel(name: str, expression: str, name_expressions: Sequence[str],
           options: Sequence[str] = ()) -> Any:
    """The compiled function `expression` (a kernel name or template instantiation) of the
    module built from `name` with all of `name_expressions`."""
    return load_module(name, name_expressions, options).get_function(expression)


def _cache_dir() -> Path:
    base = os.environ.get("MINITL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "minitl")
    path = Path(base) / "cuda"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_module_for_arch(name: str, arch: str, name_expressions: Sequence[str],
                         options: Sequence[str] = ()) -> tuple[Any, dict[str, str]]:
    """(RawModule, {expression: lowered name}) for `name` compiled by NVRTC for `arch`
    (e.g. "sm_90a"), cached as PTX under ~/.cache/minitl/cuda; the driver JIT-compiles the PTX
    for the GPU. Raises whatever NVRTC raises when the architecture is not supported."""
    import cupy
    from cupy.cuda import nvrtc

    key = ("arch", name, arch, tuple(name_expressions), tuple(options))
    with _lock:
        hit = _modules.get(key)
        if hit is not None:
            return hit
        src = read_source(name)
        opts = (*BASE_OPTIONS, f"-arch=compute_{arch.removeprefix('sm_')}", *options)
        digest = hashlib.sha256(
            "\0".join((src, *opts, *name_expressions, repr(nvrtc.getVersion()))).encode()
        ).hexdigest()[:24]
        ptx_path = _cache_dir() / f"{Path(name).stem}-{arch}-{digest}.ptx"
        names_path = ptx_path.with_suffix(".names")
        if ptx_path.is_file() and names_path.is_file():
            lowered = dict(line.split("\t", 1) for line in names_path.read_text().splitlines())
        else:
            prog = nvrtc.createProgram(src, f"{name}", (), ())
            try:
                for expr in name_expressions:
                    nvrtc.addAddNameExpression(prog, expr)
                try:
                    nvrtc.compileProgram(prog, opts)
                except nvrtc.NVRTCError as err:
                    raise RuntimeError(f"NVRTC could not compile {name} for {arch}: {err}\n"
                                       f"{nvrtc.getProgramLog(prog)}") from err
                ptx = nvrtc.getPTX(prog)
                lowered = {e: nvrtc.getLoweredName(prog, e) for e in name_expressions}
            finally:
                nvrtc.destroyProgram(prog)
            # write-then-rename so a concurrent reader never sees half a file
            for path, text in ((ptx_path, ptx),
                               (names_path, "\n".join(f"{e}\t{n}" for e, n in lowered.items()))):
                fd, tmp = tempfile.mkstemp(dir=path.parent)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
        mod = cupy.RawModule(path=str(ptx_path))
        _modules[key] = (mod, lowered)
        return mod, lowered


def clear_cache() -> None:
    """Forget the modules built in this process (tests)."""
    with _lock:
        _modules.clear()
