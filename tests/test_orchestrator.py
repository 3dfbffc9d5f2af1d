"""The stage sequence, written once (``orchestrator.run_sequence``): OUT held from the plan until
``finish`` lets it go (the flow's finish task does so in the background), and let go at once when a
stage before it fails or the output is already complete. Real plans of a real file, in this process."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from fcnseg.errors import OutputBusy
from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.orchestrator import SegmentOptions, plan_run, run_sequence, segment
from fcnseg.pipeline.output.hold import output_lock
from fcnseg.pipeline.synth import write_scene

OPTIONS = SegmentOptions(tile=64, cog=False, polygons=False, quicklook=False, stac=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("scene"), 64, seed=3)[0]


def planner(image: Path):
    return lambda folder, destination: plan_run(image, DEMO_MODEL, folder, OPTIONS, destination=destination)


def test_a_failed_infer_lets_go_of_out(image, tmp_path):
    out = tmp_path / "out"

    def infer(plan):
        with pytest.raises(OutputBusy):  # held while the stages run
            with output_lock(out):
                pass
        raise RuntimeError("a worker died")

    with pytest.raises(RuntimeError, match="a worker died"):
        run_sequence(out, time.perf_counter(), plan=planner(image), infer=infer, finish=lambda *args: None)
    with output_lock(out):  # let go
        pass


def test_finish_gets_out_still_held_and_lets_it_go(image, tmp_path):
    out = tmp_path / "out"
    handed: list[ExitStack] = []

    def finish(plan, chunk_run, seconds, held):
        handed.append(held)
        return "finishing"  # the flow returns its finish task's future here

    assert run_sequence(out, time.perf_counter(), plan=planner(image), infer=lambda plan: None,
                        finish=finish) == "finishing"
    with pytest.raises(OutputBusy):  # still held: finish has not let go yet
        with output_lock(out):
            pass
    handed[0].close()
    with output_lock(out):
        pass


def test_a_complete_output_is_skipped_and_let_go(image, tmp_path):
    out = tmp_path / "out"
    segment(image, DEMO_MODEL, out, OPTIONS, progress=False)

    def never(*args):
        raise AssertionError("a complete output runs no stage")

    report = run_sequence(out, time.perf_counter(), plan=planner(image), infer=never, finish=never)
    assert report.skipped is True
    with output_lock(out):
        pass
