"""Build the virtual board's ESP32-faithful MicroPython from the pinned v1.28.0 source.

The Unix port, built as a static 32-bit binary with single-precision floats and asyncio frozen
in (variant/ beside this file), is what the virtual board runs by default: heap, object sizes,
the small-int range, float rounding and the 2^30 ms ticks wrap are then an ESP32's. With a
board's `manifest.py` the same build also freezes the app, so the RAM of a frozen deployment
is measured too.

Where the source comes from, in order (third_party/README.md pins it: tag v1.28.0, commit
e0e9fbb1): $ALBATROSS_MICROPYTHON_SRC; `../shared/vendor/micropython-1.28.0` beside the project
(how the project's machines get it: an unchanged copy of the tag); a checkout of the tag in
`third_party/micropython`. A tree that is not v1.28.0 is refused. The source is read only: a
writable copy is made under build/. A build is cached under a key of the source's version,
the variant's files and the manifest's files, so `make setup` builds once.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from host_tools.vboard.runtime import RUNTIME_NAME

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
VARIANT_DIR = HERE / "variant"
ROM_DIR = HERE.parent / "rom"  # frozen into every build (variant/manifest.py)
BUILD_ROOT = REPO / "build" / "runtime"
MICROPYTHON_VERSION = "1.28.0"
SOURCE_CANDIDATES = (
    REPO.parent / "shared" / "vendor" / f"micropython-{MICROPYTHON_VERSION}",
    REPO / "third_party" / "micropython",
)
# What the build needs of the source tree (the vendored copy holds exactly these and more).
SOURCE_PARTS = ("py", "extmod", "shared", "ports/unix", "mpy-cross", "tools", "lib")


# libc's clock (esp32_clock.c; -D_TIME_BITS=64 names them __time64 and __gettimeofday64)
# and the GC's entry points (vstats.c) are wrapped at link time.
WRAPPED = ("__time64", "__gettimeofday64", "gc_alloc", "gc_realloc", "gc_collect")


class RuntimeBuildError(Exception):
    """The faithful runtime cannot be built here (no source, no 32-bit toolchain, ...)."""


def find_source() -> Path:
    env = os.environ.get("ALBATROSS_MICROPYTHON_SRC")
    candidates = [Path(env)] if env else list(SOURCE_CANDIDATES)
    for path in candidates:
        if (path / "py" / "mpconfig.h").is_file() and (path / "ports" / "unix").is_dir():
            found = source_version(path)
            if found != MICROPYTHON_VERSION:
                raise RuntimeBuildError(
                    f"{path} is MicroPython {found}, not the pinned {MICROPYTHON_VERSION}"
                )
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise RuntimeBuildError(
        f"MicroPython {MICROPYTHON_VERSION} source not found (tried {tried}); "
        "see third_party/README.md"
    )


def source_version(tree: Path) -> str:
    """MAJOR.MINOR.MICRO from the tree's py/mpconfig.h."""
    text = (tree / "py" / "mpconfig.h").read_text(errors="replace")
    parts = []
    for name in ("MAJOR", "MINOR", "MICRO"):
        m = re.search(rf"#define MICROPY_VERSION_{name} \(?(\d+)", text)
        parts.append(m.group(1) if m else "?")
    return ".".join(parts)


def _files_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def manifest_inputs(manifest: Path) -> list[Path]:
    """The manifest and every .py/.json/.h/.c file under the folders a frozen build may take
    from this project (firmware/, the board folder): any change there means a rebuild."""
    files = [p for p in VARIANT_DIR.iterdir() if p.is_file()]
    files += sorted(ROM_DIR.glob("*.py"))
    if manifest.resolve() != (VARIANT_DIR / "manifest.py").resolve():
        files.append(manifest)
        for folder in (REPO / "firmware" / "tracker", manifest.parent):
            files += [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
        files += [REPO / "firmware" / "boot.py", REPO / "firmware" / "main.py"]
    return files


def cache_key(source: Path, manifest: Path) -> str:
    version = (source / "py" / "mpconfig.h").read_bytes()
    return hashlib.sha256(version + _files_digest(manifest_inputs(manifest)).encode()).hexdigest()[
        :16
    ]


def _writable_copy(source: Path, dest: Path) -> Path:
    """The vendored tree is read-only (and so is CI's copy): build from a copy."""
    stamp = dest / ".albatross-source"
    marker = str(source.resolve())
    if stamp.is_file() and stamp.read_text() == marker:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    for part in SOURCE_PARTS:
        if (source / part).exists():
            shutil.copytree(source / part, dest / part, symlinks=True)
    # The freeze step insists on micropython-lib being present, though our manifests take
    # nothing from it (the vendored copy leaves that submodule out).
    mplib = dest / "lib" / "micropython-lib"
    mplib.mkdir(parents=True, exist_ok=True)
    (mplib / "README.md").touch()
    for path in dest.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
        elif path.is_dir():
            path.chmod(path.stat().st_mode | 0o700)
    stamp.write_text(marker)
    return dest


def build(
    out: Path, *, manifest: Path | None = None, jobs: int | None = None, quiet: bool = True
) -> Path:
    """Build (or take from the cache) the faithful runtime and install it at `out`."""
    source = find_source()
    manifest = (manifest or VARIANT_DIR / "manifest.py").resolve()
    manifest_is_board = manifest != (VARIANT_DIR / "manifest.py").resolve()
    key = cache_key(source, manifest)
    stamp = out.with_name(out.name + ".key")
    if out.is_file() and stamp.is_file() and stamp.read_text() == key:
        return out  # installed and current
    cached = BUILD_ROOT / "bin" / f"{RUNTIME_NAME}-{key}"
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    # One build at a time (tests and benches start boards in parallel): the others wait,
    # then find the binary in the cache.
    # Threads of one process (a bench's boards) and other processes alike: the lock is taken
    # per open file description, so each caller opens its own.
    with open(BUILD_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not cached.is_file():
            _build_into(cached, source, manifest, manifest_is_board, jobs, quiet)
        if not (out.is_file() and stamp.is_file() and stamp.read_text() == key):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            shutil.copy2(cached, tmp)
            os.replace(tmp, out)
            stamp.write_text(key)
    return out


def _build_into(
    cached: Path,
    source: Path,
    manifest: Path,
    manifest_is_board: bool,
    jobs: int | None,
    quiet: bool,
) -> None:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        raise RuntimeBuildError("gcc and make are needed (apt-get install gcc-multilib make)")
    tree = _writable_copy(source, BUILD_ROOT / "src")
    variant = BUILD_ROOT / "variants" / "esp32sim"
    if variant.exists():
        shutil.rmtree(variant)
    shutil.copytree(VARIANT_DIR, variant)
    # One build folder per manifest: a firmware change re-freezes and relinks only.
    build_dir = BUILD_ROOT / "out" / (manifest.parent.name if manifest_is_board else "plain")
    cmd = [
        "make",
        "-C",
        str(tree / "ports" / "unix"),
        f"-j{jobs or os.cpu_count() or 2}",
        f"VARIANT_DIR={variant}",
        f"BUILD={build_dir}",
        f"FROZEN_MANIFEST={manifest}",
        "CFLAGS_EXTRA=-m32",
        "LDFLAGS_EXTRA=-m32 -static " + ",".join(["-Wl"] + [f"--wrap={s}" for s in WRAPPED]),
        "MICROPY_PY_BTREE=0",
        "MICROPY_PY_SSL=0",
        "MICROPY_PY_FFI=0",
    ]
    # BUILD= on the make command line leaks into the mpy-cross sub-make: build that
    # first with its own defaults, so the port's make finds it ready.
    steps = [["make", "-C", str(tree / "mpy-cross"), f"-j{jobs or os.cpu_count() or 2}"], cmd]
    for step in steps:
        result = subprocess.run(step, capture_output=quiet, text=True)
        if result.returncode and step is cmd and build_dir.exists():
            # An incremental re-freeze can trip over what an interrupted build left:
            # once more from a clean folder.
            shutil.rmtree(build_dir)
            result = subprocess.run(step, capture_output=quiet, text=True)
        if result.returncode:
            tail = (result.stderr or result.stdout or "")[-1500:] if quiet else ""
            raise RuntimeBuildError(f"build failed: {' '.join(step[:4])} ...\n{tail}")
    binary = build_dir / "micropython"
    if not binary.is_file():
        raise RuntimeBuildError(f"build produced no binary at {binary}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, cached)


def board_manifest(board: str) -> Path:
    path = REPO / "boards" / board / "manifest.py"
    if not path.is_file():
        raise RuntimeBuildError(f"board {board!r} has no manifest.py to freeze")
    return path


def build_frozen(board: str, out: Path, *, quiet: bool = True) -> Path:
    """The faithful runtime with `board`'s manifest (the app) frozen in."""
    return build(out, manifest=board_manifest(board), quiet=quiet)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(sys.executable).with_name(RUNTIME_NAME))
    ap.add_argument("--board", help="freeze this board's manifest.py (the app) into it")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        manifest = board_manifest(args.board) if args.board else None
        path = build(args.out, manifest=manifest, quiet=not args.verbose)
    except RuntimeBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"runtime: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
