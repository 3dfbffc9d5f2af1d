"""The typed records of a run (``pipeline.output.run_identity``): each writes exactly the JSON the
string-keyed dicts wrote before them, reads it back, and a refused rerun says what differs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.orchestrator import OutputConflict, SegmentOptions, output_lock, plan_run
from fcnseg.pipeline.output.guard import judge_previous
from fcnseg.pipeline.output.layout import PARAMETERS_JSON as PARAMETERS_FILE, STATE_DIR
from fcnseg.pipeline.output.run_identity import RunIdentity

#: parameters.json as fcnseg wrote it before the records were typed (run_parameters' dict, indent 2).
PARAMETERS_JSON = """{
  "input": "/data/scene.tif",
  "input_fingerprint": {
    "size": 1234,
    "sha256_sampled": "ab12"
  },
  "model_sha256": "0123456789abcdef0123456789abcdef",
  "device": "auto",
  "tile": 512,
  "halo": 96,
  "stitch": "crop",
  "bands": [
    1,
    2,
    3
  ],
  "probabilities": false
}"""


@pytest.fixture(scope="module")
def planned(scene, tmp_path_factory) -> tuple[Path, RunIdentity]:
    """A real plan of the shared scene: OUT and the identity it recorded."""
    out = tmp_path_factory.mktemp("records") / "out"
    with output_lock(out):
        plan = plan_run(scene[0], DEMO_MODEL, out, SegmentOptions(tile=128, batch_size=1, device="cpu"))
    return out, plan.parameters


def test_the_run_identity_writes_and_reads_todays_parameters_json_exactly() -> None:
    identity = RunIdentity.from_json(json.loads(PARAMETERS_JSON))
    assert json.dumps(identity.to_json(), indent=2) == PARAMETERS_JSON
    assert identity.bands == (1, 2, 3) and identity.tile == 512
    assert RunIdentity.from_json(identity.to_json()) == identity


def test_a_planned_run_records_the_identity_as_before(planned) -> None:
    out, identity = planned
    before = {  # the dict run_parameters returned before RunIdentity, in its key order
        "input": identity.input, "input_fingerprint": dict(identity.input_fingerprint),
        "model_sha256": identity.model_sha256, "device": "cpu", "tile": 128, "halo": identity.halo,
        "stitch": "crop", "bands": list(identity.bands), "probabilities": False,
    }
    assert (out / STATE_DIR / PARAMETERS_FILE).read_text() == json.dumps(before, indent=2)


def test_the_identity_is_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        RunIdentity("/data/scene.tif", {}, "00", "auto", 512, 96, "crop", (1,), False)  # type: ignore[misc]


def test_a_record_without_an_identity_key_is_named() -> None:
    record = json.loads(PARAMETERS_JSON)
    del record["halo"], record["stitch"]
    with pytest.raises(ValueError, match="^run parameters without halo, stitch$"):
        RunIdentity.from_json(record)


def test_the_other_parameters_refusal_says_what_differs(tmp_path) -> None:
    previous = json.loads(PARAMETERS_JSON)
    now = RunIdentity.from_json({**previous, "tile": 256, "model_sha256": "fedcba9876543210fedcba9876543210"})
    with pytest.raises(OutputConflict) as refused:
        judge_previous(tmp_path, previous, [], now, overwrite=False)
    assert str(refused.value) == (
        f"{tmp_path}: holds a run with other parameters (model sha256 fedcba987654… (was 0123456789ab…), "
        "--tile 256 (was 512)); use --overwrite (flow: overwrite=true) to replace it")


def test_the_diff_names_flags_bands_and_unrecorded_keys() -> None:
    previous = json.loads(PARAMETERS_JSON)
    now = RunIdentity.from_json({**previous, "bands": [3, 2, 1], "probabilities": True})
    assert now.differences(previous) == "--bands 3,2,1 (was 1,2,3), --probabilities on (was off)"
    del previous["stitch"]
    assert now.differences(previous).endswith("--stitch crop (was not recorded)")
    assert now.changed(json.loads(PARAMETERS_JSON)) == ["bands", "probabilities"]


def test_only_a_changed_input_content_starts_again_without_a_refusal(tmp_path) -> None:
    previous = json.loads(PARAMETERS_JSON)
    now = RunIdentity.from_json({**previous, "input_fingerprint": {"size": 99, "sha256_sampled": "ff"}})
    assert judge_previous(tmp_path, previous, [], now, overwrite=False) is False
    assert judge_previous(tmp_path, previous, [], RunIdentity.from_json(previous), overwrite=False) is True
