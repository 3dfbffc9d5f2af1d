"""The front door's figures (issue 24): what a user waits for beyond inference, and the memory of
small runs. Each measured as a whole process, from outside, as a user would see it:

    .venv/bin/python benchmarks/front_door.py [--work DIR] [--size 1536] [--demo] [--peer]

* ``fcnseg segment SCENE --out OUT`` (every default output) on a ``--size``² synthetic scene
  (seed 77): its wall time against ``seconds.infer`` of the same run's run.json (target <= 2.0 x),
  how it computed (run.json's ``cluster``) and the peak memory of its process tree;
* the same command again on the complete output (target <= 3 s wall);
* with ``--demo``: ``python -m fcnseg.demo`` (``make demo``), its wall and peak memory (target <= 1 GB);
* with ``--peer``: the fastest peer of ``../shared/peers/`` (its README says how to install it into
  ``~/.cache/fcnseg-peer``) against ``fcnseg segment --workers 2 --no-polygons --no-quicklook
  --no-stac`` on 4096² and 8192² scenes, one after the other (targets: wall <= 0.7 x the peer's, a
  lower peak memory).

Peak memory is that of the whole process tree (the command and every process it starts), sampled
every 0.1 s with psutil, so it is comparable between fcnseg's Dask workers and a single process; two
sums: resident (RSS) and proportional (PSS, each shared page divided among the processes sharing
it). RSS counts a page that several processes share once in each: a forked child that has not yet
exec'd (the demo's Prefect server starting, for a moment) doubles its parent's memory in the RSS
sum and adds nothing to the PSS sum, which is what the machine's memory actually held.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

FCNSEG = str(Path(sys.executable).with_name("fcnseg"))
ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT.parent / "shared" / "peers"
PEER_ENV = Path.home() / ".cache" / "fcnseg-peer"
SEED = 77


@dataclass
class Measured:
    """A command's wall time (s), its process tree's peak memory (MB: the RSS sum, the PSS sum)
    and exit status."""

    wall: float
    peak_mb: float
    status: int
    stderr: str
    peak_pss_mb: float = 0.0


def tree_memory_mb(process: psutil.Process) -> tuple[float, float]:
    """Resident and proportional memory of a process and all its descendants now, MB."""
    rss = pss = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_full_info()
        except psutil.Error:  # gone between the listing and the read
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return rss / 2**20, pss / 2**20


def measure(command: list[str], **kwargs) -> Measured:
    """Run ``command`` to its end, sampling its process tree's memory every 0.1 s."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
    process, peak, peak_pss = psutil.Process(child.pid), 0.0, 0.0
    while child.poll() is None:
        try:
            rss, pss = tree_memory_mb(process)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - started
    return Measured(wall, peak, child.returncode, child.stderr.read() if child.stderr else "", peak_pss)


def gb(result: Measured) -> str:
    """The peak as printed: the RSS sum, then the PSS sum."""
    return f"{result.peak_mb / 1024:.2f} GB RSS ({result.peak_pss_mb / 1024:.2f} GB PSS)"


def scene(work: Path, size: int) -> Path:
    """The ``fcnseg synth`` scene of SEED at ``size``² (made once)."""
    folder = work / f"scene-{size}"
    image = folder / "image.tif"
    if not image.exists():
        subprocess.run([FCNSEG, "synth", str(folder), "--size", str(size), "--seed", str(SEED)], check=True,
                       capture_output=True)
    return image


def checked(result: Measured, what: str) -> Measured:
    if result.status != 0:
        sys.exit(f"{what} failed ({result.status}): {result.stderr.strip().splitlines()[-1:]}")
    return result


def front_door(work: Path, size: int) -> None:
    """A default run of a small scene against its own inference time, then its rerun."""
    image, out = scene(work, size), work / f"out-{size}"
    shutil.rmtree(out, ignore_errors=True)
    command = [FCNSEG, "segment", str(image), "--out", str(out)]
    first = checked(measure(command), "segment")
    record = json.loads((out / "run.json").read_text())
    infer = record["seconds"]["infer"]
    print(f"segment {size}²: wall {first.wall:.1f} s, infer {infer:.2f} s -> {first.wall / infer:.1f} x "
          f"(cluster {record.get('cluster')}, {record['workers']} worker(s); stages {record['seconds']}); "
          f"peak {gb(first)}")
    again = checked(measure(command), "rerun")
    print(f"rerun of the complete output: wall {again.wall:.2f} s, peak {gb(again)}")


def demo(work: Path) -> None:
    """``make demo``'s command, in its own folder."""
    result = checked(measure([sys.executable, "-m", "fcnseg.demo", "--out", str(work / "demo")]), "demo")
    print(f"demo: wall {result.wall:.1f} s, peak {gb(result)}")


def peer(work: Path, sizes: tuple[int, ...] = (4096, 8192)) -> None:
    """fcnseg against the peer, same scenes, one after the other."""
    python, model = PEER_ENV / "bin" / "python", PEER_ENV / "m.pt"
    if not python.exists():
        sys.exit(f"{python}: the peer is not installed; see {PEERS / 'README.md'}")
    if not model.exists():
        subprocess.run([sys.executable, str(PEERS / "export_ts.py"), str(ROOT / "models/weights/demo-fcn8s.safetensors"),
                        str(model)], check=True)
    for size in sizes:
        image, out = scene(work, size), work / f"peer-fcnseg-{size}"
        shutil.rmtree(out, ignore_errors=True)
        ours = checked(measure([FCNSEG, "segment", str(image), "--out", str(out), "--workers", "2", "--no-polygons",
                                "--no-quicklook", "--no-stac"]), "segment")
        theirs = checked(measure([str(python), str(PEERS / "run_toolbelt.py"), str(image), str(work / f"peer-{size}.tif"),
                                  "1536", "1024", "pyramid", "4", str(model)]), "peer")
        print(f"{size}²: fcnseg {ours.wall:.1f} s / {gb(ours)}, peer {theirs.wall:.1f} s / "
              f"{gb(theirs)} -> wall {ours.wall / theirs.wall:.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fcnseg-front-door"))
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--demo", action="store_true", help="Also measure make demo's peak memory.")
    parser.add_argument("--peer", action="store_true", help="Also run the peer at 4096² and 8192².")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores")
    front_door(args.work, args.size)
    if args.demo:
        demo(args.work)
    if args.peer:
        peer(args.work)


if __name__ == "__main__":
    main()
