"""A corpus of bad inputs and faults against the real command line, each held to the project's rule:

    Exit 0 means the output is complete and correct. Anything else is a non-zero exit with ONE
    error line that names the file or option and the problem: never a traceback, never a
    half-written output that looks complete, never a file of the user's overwritten.

Every case runs ``fcnseg`` on tiny synthetic data shared by the whole module: most in this process,
through the console script's own entry (``fcnseg.cli.app``, the ``FcnsegApp`` whose error wrapper
and usage errors the script runs; a subprocess pays about 2 s of imports each), and a few
(``SUBPROCESS``, one per command and the failures from deepest down) as a user would, the installed
console script in a process of its own, where a traceback would reach stderr. Each checks: exit status 1; stderr ends with exactly one
error line, starting with ``fcnseg: error:`` and naming the offending file (its basename) or
option, and says nothing else of errors (before it only the run's INFO/WARNING log lines may
stand); no ``Traceback`` anywhere; and for ``segment`` an OUT with nothing in it that looks
complete (``run.json``, ``labels.tif``, ``item.json``, ``polygons.parquet``) that was not there
before, every file of the user's in OUT byte-identical; for ``train`` no checkpoint at ``--out``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from fcnseg.models import DEMO_MODEL

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = REPO / ".venv" / "bin" / "fcnseg"
#: The console script a user runs; ``python -m fcnseg`` where the checkout has no .venv of its own.
FCNSEG = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fcnseg"]
#: Files whose presence says "this output folder is complete".
LOOKS_COMPLETE = ("run.json", "labels.tif", "item.json", "polygons.parquet")
#: Small and fast: 128 px chunks of a 256 px scene on one local worker.
FAST = ["--tile", "128", "--workers", "1"]
TIMEOUT = 180


# --------------------------------------------------------------------------- shared tiny data


class Assets:
    """Scenes, rasters and checkpoints the cases share, each made on first use only."""

    def __init__(self, root: Path):
        self.root = root

    @cached_property
    def scene(self) -> tuple[Path, Path]:
        from fcnseg.pipeline.synth import write_scene

        return write_scene(self.root / "scene", 256, seed=3)

    @property
    def image(self) -> Path:
        return self.scene[0]

    @property
    def labels(self) -> Path:
        return self.scene[1]

    @cached_property
    def bounds(self) -> rasterio.coords.BoundingBox:
        with rasterio.open(self.labels) as src:
            return src.bounds

    @cached_property
    def three_band(self) -> Path:
        """The scene's first three bands: a raster the 4-band demo model cannot take."""
        path = self.root / "threeband.tif"
        with rasterio.open(self.image) as src:
            profile = src.profile | {"count": 3}
            data = src.read([1, 2, 3])
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return path

    @cached_property
    def four_band(self) -> Path:
        """The 4-band image under a name of its own (query takes single-band class rasters)."""
        path = self.root / "fourband.tif"
        shutil.copyfile(self.image, path)
        return path

    @cached_property
    def float_raster(self) -> Path:
        """A single-band float32 raster on the scene's grid (not a class raster)."""
        path = self.root / "floats.tif"
        with rasterio.open(self.labels) as src:
            profile = src.profile | {"dtype": "float32", "nodata": -9999.0}
            data = src.read(1).astype("float32") + 0.5
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        return path

    @cached_property
    def labels128(self) -> Path:
        """A 128 px label raster: the top-left quarter of the scene's labels, not on the image's grid."""
        path = self.root / "labels128.tif"
        window = Window(0, 0, 128, 128)
        with rasterio.open(self.labels) as src:
            profile = src.profile | {"width": 128, "height": 128, "transform": src.transform}  # same origin
            data = src.read(1, window=window)
            tags = src.tags()
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
            dst.update_tags(**tags)
        return path

    @cached_property
    def three_band_model(self) -> Path:
        path = self.root / "threeband.safetensors"
        run_in_process(["init-model", path, "--bands", 3, "--classes", 6, "--width", 0.125], self.root, check=True)
        return path

    @cached_property
    def truncated_model(self) -> Path:
        path = self.root / "half.safetensors"
        data = DEMO_MODEL.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path

    @cached_property
    def garbage_model(self) -> Path:
        path = self.root / "garbage.safetensors"
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
        return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Assets:
    return Assets(tmp_path_factory.mktemp("bad-inputs"))


# --------------------------------------------------------------------------- running the CLI


@dataclass
class Result:
    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def run_cli(args: list, cwd: Path, *, timeout: float = TIMEOUT, check: bool = False,
            env: dict[str, str] | None = None) -> Result:
    """``fcnseg ARGS`` in its own process group (so that a hung run and its Dask workers can be
    stopped together on timeout)."""
    argv = [*FCNSEG, *map(str, args)]
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, **(env or {})})
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        timed_out = True
    result = Result([str(a) for a in args], None if timed_out else process.returncode, stdout, stderr,
                    time.monotonic() - started, timed_out)
    if check and (timed_out or result.returncode != 0):
        raise AssertionError(f"setup command fcnseg {' '.join(result.args)} failed:\n{stderr}")
    return result


def run_in_process(args: list, cwd: Path, *, timeout: float = TIMEOUT, check: bool = False,
                   env: dict[str, str] | None = None) -> Result:
    """``fcnseg ARGS`` in this process, through the console script's entry (``fcnseg.cli.app``):
    stdout and stderr captured, log records written to stderr as the script's handler would, and
    an exception that escapes the entry written as the traceback a subprocess would print. Only
    for commands that fail before a cluster starts (``timeout``, ``env``: for run_cli's signature)."""
    from fcnseg.cli import app

    assert env is None, "a case with its own environment runs in a subprocess"
    stdout, stderr = io.StringIO(), io.StringIO()
    records = logging.StreamHandler(stderr)
    records.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger().addHandler(records)
    started = time.monotonic()
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                app(args=[str(a) for a in args], prog_name="fcnseg")
                status = 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except BaseException:  # noqa: BLE001 - what a subprocess would print and exit 1 with
                stderr.write(traceback.format_exc())
                status = 1
    finally:
        logging.getLogger().removeHandler(records)
    result = Result([str(a) for a in args], status, stdout.getvalue(), stderr.getvalue(), time.monotonic() - started)
    if check and result.returncode != 0:
        raise AssertionError(f"setup command fcnseg {' '.join(result.args)} failed:\n{result.stderr}")
    return result


# --------------------------------------------------------------------------- the cases


@dataclass
class Call:
    """One invocation and what it must name. ``out``: segment's OUT (checked for complete-looking
    files and the user's files); ``must_not_exist``: files the command must not leave behind."""

    args: list
    names: tuple[str, ...]
    out: Path | None = None
    must_not_exist: tuple[Path, ...] = ()
    timeout: float = TIMEOUT
    cleanup: Callable[[], object] | None = None
    env: dict[str, str] | None = None


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Assets, Path], Call]


CASES: list[Case] = []


def case(id: str) -> Callable:
    def register(build: Callable[[Assets, Path], Call]) -> Callable:
        CASES.append(Case(id, build))
        return build

    return register


def seg(a: Assets, tmp: Path, *extra, input: Path | str | None = None, out: Path | None = None,
        names: tuple[str, ...], timeout: float = TIMEOUT, local: bool = True,
        cleanup: Callable[[], object] | None = None) -> Call:
    """``segment INPUT --out OUT --tile 128 --workers 1 EXTRA`` (options given in EXTRA win; no
    ``--workers`` when the cluster is not a local one: it would only draw a warning)."""
    out = out if out is not None else tmp / "out"
    fast = [v for key, value in zip(FAST[::2], FAST[1::2])
            if key not in extra and (local or key != "--workers") for v in (key, value)]
    return Call(["segment", input if input is not None else a.image, "--out", out, *fast, *extra], names, out=out,
                timeout=timeout, cleanup=cleanup)


# segment: the input

@case("segment-missing-input")
def _(a, tmp):
    return seg(a, tmp, input=tmp / "missing.tif", names=("missing.tif",))


@case("segment-input-is-text")
def _(a, tmp):
    text = tmp / "notes.tif"
    text.write_text("this is not a raster\n")
    return seg(a, tmp, input=text, names=("notes.tif",))


@case("segment-input-empty-tif")
def _(a, tmp):
    empty = tmp / "empty.tif"
    empty.write_bytes(b"")
    return seg(a, tmp, input=empty, names=("empty.tif",))


@case("segment-input-truncated-geotiff")
def _(a, tmp):
    cut = tmp / "truncated.tif"
    data = a.image.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.4)])
    return seg(a, tmp, input=cut, names=("truncated.tif",))


@case("segment-3-band-raster-for-4-band-model")
def _(a, tmp):
    return seg(a, tmp, input=a.three_band, names=("threeband.tif",))


# segment: options

for _id, _extra, _name in [
    ("segment-bands-0-based", ["--bands", "0,1,2,3"], "--bands"),
    ("segment-bands-out-of-range", ["--bands", "1,2,3,9"], "--bands"),
    ("segment-batch-size-0", ["--batch-size", "0"], "--batch-size"),
    ("segment-batch-size-negative", ["--batch-size", "-3"], "--batch-size"),
    ("segment-tile-100", ["--tile", "100"], "--tile"),
    ("segment-tile-0", ["--tile", "0"], "--tile"),
    ("segment-tile-negative", ["--tile", "-64"], "--tile"),
    ("segment-halo-33", ["--halo", "33"], "--halo"),
    ("segment-halo-negative", ["--halo", "-32"], "--halo"),
    ("segment-stitch-wrong", ["--stitch", "wrong"], "--stitch"),
    ("segment-device-tpu", ["--device", "tpu"], "--device"),
    ("segment-workers-0", ["--workers", "0"], "--workers"),
    ("segment-simplify-negative", ["--simplify", "-1"], "--simplify"),
    ("segment-min-area-negative", ["--min-area", "-5"], "--min-area"),
    ("segment-polygon-cell-0", ["--polygon-cell", "0"], "--polygon-cell"),
]:
    case(_id)(lambda a, tmp, extra=_extra, name=_name: seg(a, tmp, *extra, names=(name,)))


@case("segment-device-cuda-without-cuda")
def _(a, tmp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    return seg(a, tmp, "--device", "cuda", names=("--device",))


# segment: the model

@case("segment-model-missing")
def _(a, tmp):
    return seg(a, tmp, "--model", tmp / "nomodel.safetensors", names=("nomodel.safetensors",))


@case("segment-model-garbage")
def _(a, tmp):
    return seg(a, tmp, "--model", a.garbage_model, names=("garbage.safetensors",))


@case("segment-model-truncated")
def _(a, tmp):
    return seg(a, tmp, "--model", a.truncated_model, names=("half.safetensors",))


@case("segment-model-3-bands-for-4-band-raster")
def _(a, tmp):
    # the mismatch is between the two files: naming either of them is naming the problem's place
    return seg(a, tmp, "--model", a.three_band_model, names=("threeband.safetensors", a.image.name))


# segment: the output folder

@case("segment-out-is-a-file")
def _(a, tmp):
    target = tmp / "out.txt"
    target.write_text("my notes, not a folder\n")
    return seg(a, tmp, out=target, names=("out.txt",))


def writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("")
    except OSError:
        return False
    probe.unlink()
    return True


@case("segment-out-read-only")
def _(a, tmp):
    ro = tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    undo = [lambda: ro.chmod(0o755)]
    if writable(ro) and shutil.which("chattr"):
        # root writes into a chmod 555 folder: an immutable one is read-only even for root
        if subprocess.run(["chattr", "+i", ro], capture_output=True).returncode == 0:
            undo.insert(0, lambda: subprocess.run(["chattr", "-i", ro], capture_output=True))
    if writable(ro):
        for step in undo:
            step()
        pytest.skip("no read-only folder can be made here (root, and no chattr +i)")
    return seg(a, tmp, out=ro, names=("readonly",), cleanup=lambda: [step() for step in undo])


@case("segment-out-is-a-synth-folder")
def _(a, tmp):
    folder = tmp / "synthscene"
    folder.mkdir()
    shutil.copyfile(a.image, folder / "image.tif")
    shutil.copyfile(a.labels, folder / "labels.tif")
    return seg(a, tmp, input=folder / "image.tif", out=folder, names=("synthscene", "labels.tif"))


@case("segment-out-holds-a-run-with-other-parameters")
def _(a, tmp):
    out = tmp / "prevrun"
    run_in_process(["segment", a.image, "--out", out, "--tile", "128"], tmp, check=True)  # small: in this process
    assert (out / "run.json").exists()
    return seg(a, tmp, "--tile", "160", out=out, names=("prevrun", "--tile"))


# segment: the cluster

@case("segment-scheduler-nothing-listening")
def _(a, tmp):
    call = seg(a, tmp, "--scheduler", "tcp://127.0.0.1:9", names=("--scheduler", "tcp://127.0.0.1:9"),
               timeout=60, local=False)
    return dataclasses.replace(call, env={"FCNSEG_CONNECT_TIMEOUT": "1s"})  # nothing listens: no need to wait 10 s


@case("segment-cluster-spec-unknown")
def _(a, tmp):
    return seg(a, tmp, "--cluster-spec", "nosuchspec", names=("--cluster-spec", "nosuchspec"), local=False)


# query

@case("query-missing-raster")
def _(a, tmp):
    return Call(["query", tmp / "nolabels.tif"], ("nolabels.tif",))


@case("query-4-band-raster")
def _(a, tmp):
    return Call(["query", a.four_band], ("fourband.tif",))


@case("query-float-raster")
def _(a, tmp):
    return Call(["query", a.float_raster], ("floats.tif",))


@case("query-bbox-inverted")
def _(a, tmp):
    b = a.bounds
    return Call(["query", a.labels, "--bbox", b.right - 10, b.top - 10, b.left + 10, b.bottom + 10], ("--bbox",))


@case("query-bbox-outside-the-raster")
def _(a, tmp):
    b = a.bounds
    return Call(["query", a.labels, "--bbox", b.left + 1e5, b.bottom + 1e5, b.right + 1e5, b.top + 1e5], ("--bbox",))


@case("query-aoi-missing-file")
def _(a, tmp):
    return Call(["query", a.labels, "--aoi", tmp / "noaoi.gpkg"], ("noaoi.gpkg",))


@case("query-point-outside-the-raster")
def _(a, tmp):
    b = a.bounds
    return Call(["query", a.labels, "--point", b.left - 1000, b.bottom - 1000], ("--point",))


@case("query-crs-not-a-crs")
def _(a, tmp):
    b = a.bounds
    return Call(["query", a.labels, "--bbox", b.left + 10, b.bottom + 10, b.right - 10, b.top - 10, "--crs", "NOTACRS"],
                ("--crs", "--bbox-crs", "NOTACRS"))


# train

def train(a: Assets, tmp: Path, *, names: tuple[str, ...], labels: Path | None = None, **options) -> Call:
    """``train`` on the scene for 2 steps of 2 chips of 64 px (``options`` override those)."""
    out = tmp / "trained.safetensors"
    settings = {"--steps": 2, "--chip": 64, "--batch-size": 2} | {f"--{k.replace('_', '-')}": v for k, v in options.items()}
    args = ["train", "--image", a.image, "--labels", labels if labels is not None else a.labels, "--out", out]
    for key, value in settings.items():
        args += [key, value]
    return Call(args, names, must_not_exist=(out,))


@case("train-steps-0")
def _(a, tmp):
    return train(a, tmp, steps=0, names=("--steps",))


@case("train-steps-negative")
def _(a, tmp):
    return train(a, tmp, steps=-5, names=("--steps",))


@case("train-labels-missing")
def _(a, tmp):
    return train(a, tmp, labels=tmp / "nolabels.tif", names=("nolabels.tif",))


@case("train-labels-on-another-grid")
def _(a, tmp):
    return train(a, tmp, labels=a.labels128, names=("labels128.tif",))


@case("train-val-image-without-val-labels")
def _(a, tmp):
    return train(a, tmp, val_image=a.image, names=("--val-image", "--val-labels"))


@case("train-bands-9")
def _(a, tmp):
    return train(a, tmp, bands="9", names=("--bands",))


# evaluate

def evaluate(a: Assets, *, model: Path = DEMO_MODEL, labels: Path | None = None, tile: int = 128,
             names: tuple[str, ...]) -> Call:
    return Call(["evaluate", "--model", model, "--image", a.image, "--labels", labels if labels is not None else a.labels,
                 "--tile", tile, "--json"], names)


@case("evaluate-model-missing")
def _(a, tmp):
    return evaluate(a, model=tmp / "nomodel.safetensors", names=("nomodel.safetensors",))


@case("evaluate-labels-missing")
def _(a, tmp):
    return evaluate(a, labels=tmp / "nolabels.tif", names=("nolabels.tif",))


@case("evaluate-tile-100")
def _(a, tmp):
    return evaluate(a, tile=100, names=("--tile",))


# --------------------------------------------------------------------------- the rule


def snapshot(out: Path) -> dict[str, bytes]:
    """The user's files in OUT (or OUT itself when it is a file), by relative path. fcnseg's own
    hidden state (``.fcnseg-run``, ``.fcnseg.lock``) is not the user's."""
    if out.is_file():
        return {".": out.read_bytes()}
    if not out.is_dir():
        return {}
    files = {}
    for path in out.rglob("*"):
        rel = path.relative_to(out)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = path.read_bytes()
    return files


def violations(call: Call, result: Result, before: dict[str, bytes]) -> list[str]:
    problems = []
    if result.timed_out:
        problems.append(f"did not finish in {call.timeout:.0f} s")
    elif result.returncode != 1:
        problems.append(f"exit status {result.returncode}, not 1")
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("fcnseg: error:")]
    if len(errors) != 1:
        problems.append(f"stderr has {len(errors)} 'fcnseg: error:' lines, not 1")
    if not lines or not lines[-1].startswith("fcnseg: error:"):
        problems.append("the last stderr line does not start with 'fcnseg: error:'")
    noise = [line for line in lines[:-1] if any(w in line for w in ("ERROR", "Error", "error", "Exception"))]
    if noise:  # the lines before it may only be fcnseg's own INFO/WARNING log of the run
        problems.append(f"other error output besides the one line: {noise[:2]}")
    error = next((line for line in lines if line.startswith("fcnseg: error:")), "")
    if error and not any(name in error for name in call.names):
        problems.append(f"the error line names none of {list(call.names)}")
    if "Traceback" in result.stdout + result.stderr:
        problems.append("a traceback was printed")
    if call.out is not None:
        out = call.out
        if "." in before:
            if not out.is_file() or out.read_bytes() != before["."]:
                problems.append(f"the user's file {out.name} was changed or replaced")
        elif out.is_dir():
            top = {rel.split("/")[0] for rel in before}
            complete = [n for n in LOOKS_COMPLETE if (out / n).exists() and n not in top]
            if complete:
                problems.append(f"OUT holds {', '.join(complete)}, which look complete")
            changed = [rel for rel, data in before.items()
                       if not (out / rel).is_file() or (out / rel).read_bytes() != data]
            if changed:
                problems.append(f"the user's files in OUT were changed or removed: {', '.join(sorted(changed)[:5])}")
    for path in call.must_not_exist:
        if path.exists():
            problems.append(f"{path.name} was written")
    return problems


#: The cases run in a process of their own, as a user runs them: a traceback would reach stderr
#: there. One per command, and the failures from deepest down: GDAL's read of a truncated file (on
#: a worker), a scheduler that never answers (its own environment), the checkpoint's parser, OGR.
SUBPROCESS = frozenset({
    "segment-input-truncated-geotiff", "segment-scheduler-nothing-listening", "segment-model-garbage",
    "query-aoi-missing-file", "train-labels-on-another-grid", "evaluate-labels-missing",
})


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_with_one_clear_line(bad: Case, assets: Assets, tmp_path: Path):
    call = bad.build(assets, tmp_path)
    before = snapshot(call.out) if call.out is not None else {}
    run = run_cli if bad.id in SUBPROCESS else run_in_process
    try:
        result = run(call.args, tmp_path, timeout=call.timeout, env=call.env)
        problems = violations(call, result, before)
    finally:
        if call.cleanup is not None:  # a read-only OUT made writable again, for pytest's clean-up
            call.cleanup()
    stderr = "\n".join(line for line in result.stderr.splitlines() if line.strip())
    print(f"exit {result.returncode} in {result.seconds:.1f} s: {stderr}")  # shown with -rP
    if problems:
        raise AssertionError(
            f"fcnseg {' '.join(result.args)}\n  " + "\n  ".join(problems)
            + f"\n  (exit {result.returncode}, {result.seconds:.1f} s)\n--- stderr ---\n{stderr[-3000:]}"
            + (f"\n--- stdout ---\n{result.stdout[-1000:]}" if result.stdout.strip() else "")
        )


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 35 and len({c.id for c in CASES}) == len(CASES)
    assert SUBPROCESS <= {c.id for c in CASES} and {i.split("-")[0] for i in SUBPROCESS} == {
        "segment", "query", "train", "evaluate"}
