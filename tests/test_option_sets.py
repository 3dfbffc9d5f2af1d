"""One set of options (issue 24): ``fcnseg segment`` and ``fcnseg train`` against the flows that run
them. Every option of either command is a parameter of its flow, or a field of the options model the
flow takes (``SegmentOptions``, ``TrainRequest``), with the same default and the same description;
and a bad value fails in the same one line from the command line and from the flow's parameter
validation. In-process: the Typer commands' parameters and the flows' parameter schema are read,
no Prefect server is started."""

from __future__ import annotations

from typing import Any

import click
import pytest
import typer.main
from prefect.exceptions import ParameterTypeError
from typer.testing import CliRunner

from fcnseg.cli import app
from fcnseg.flows.segment_scene import segment_scene
from fcnseg.flows.train_fcn import train_fcn
from fcnseg.pipeline.orchestrator import SegmentOptions
from fcnseg.pipeline.training.train import TrainRequest

#: Options of the commands with no flow parameter of that name, and why.
SEGMENT_CLI_ONLY = {
    "input": "the flow takes inputs: many scenes",
    "out": "the flow takes output_root: a folder per scene under it",
    "as_json": "what the command prints",
}
#: A command-line option and the flow parameter that is the same thing.
SEGMENT_FLOW_NAME = {"scheduler": "scheduler_address"}
#: Flow parameters no command-line option matches.
SEGMENT_FLOW_ONLY = {"inputs", "output_root", "options"}
TRAIN_FLOW_ONLY = {"request", "eval_image", "eval_labels"}
#: Fields of a model no command-line option sets.
MODEL_ONLY = {"progress"}  # the command line's choice (a terminal), never an option


def command(name: str) -> click.Command:
    return typer.main.get_command(app).commands[name]


def cli_options(name: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in command(name).params}


def flow_parameters(flow) -> dict[str, dict[str, Any]]:
    return flow.parameters.model_dump()["properties"]


def model_default(model, name: str) -> Any:
    return model.model_fields[name].get_default()


def same(option: click.Parameter, default: Any, description: str | None) -> list[str]:
    """What differs between a command-line option and its flow parameter or model field."""
    problems = []
    if option.default != default:
        problems.append(f"{option.name}: default {option.default!r} on the command line, {default!r} in the flow")
    if option.help != description:
        problems.append(f"{option.name}: help {option.help!r} on the command line, {description!r} in the flow")
    return problems


def test_every_segment_option_is_a_flow_parameter_with_its_default_and_description():
    options, flow = cli_options("segment"), flow_parameters(segment_scene)
    fields = SegmentOptions.model_fields
    problems = []
    for name, option in options.items():
        if name in SEGMENT_CLI_ONLY:
            continue
        if name in fields:
            problems += same(option, model_default(SegmentOptions, name), fields[name].description)
        elif SEGMENT_FLOW_NAME.get(name, name) in flow:
            parameter = flow[SEGMENT_FLOW_NAME.get(name, name)]
            problems += same(option, parameter.get("default"), parameter.get("description"))
        else:
            problems.append(f"--{name}: no flow parameter and no field of SegmentOptions")
    assert problems == []
    assert set(fields) - MODEL_ONLY <= set(options)  # and every field is an option
    matched = {SEGMENT_FLOW_NAME.get(n, n) for n in options}
    assert set(flow) - matched == SEGMENT_FLOW_ONLY
    assert flow["options"]["anyOf"][0]["$ref"].endswith("/SegmentOptions")  # the UI's form: the fields, described
    schema = segment_scene.parameters.model_dump()["definitions"]["SegmentOptions"]["properties"]
    assert {name: field["description"] for name, field in schema.items()} == {n: f.description for n, f in fields.items()}


def test_every_train_option_is_a_field_of_the_flows_request_with_its_default_and_description():
    options, fields = cli_options("train"), TrainRequest.model_fields
    problems = []
    for name, option in options.items():
        if name not in fields:
            problems.append(f"--{name}: no field of TrainRequest")
            continue
        required = fields[name].is_required()
        default = None if required else model_default(TrainRequest, name)
        problems += same(option, default, fields[name].description)
        if option.required != required:
            problems.append(f"--{name}: required {option.required} on the command line, {required} in the flow")
    assert problems == []
    assert set(fields) - MODEL_ONLY == set(options)
    assert set(flow_parameters(train_fcn)) == TRAIN_FLOW_ONLY
    schema = train_fcn.parameters.model_dump()["definitions"]["TrainRequest"]["properties"]
    assert set(schema) == set(fields) - MODEL_ONLY


def cli_error(args: list[str]) -> str:
    """The one error line of the command (in-process), without its ``fcnseg: error: ``."""
    result = CliRunner().invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("fcnseg: error: "), result.output
    return lines[0].removeprefix("fcnseg: error: ")


def flow_error(flow, parameters: dict[str, Any], field: str) -> str:
    """The line the flow's parameter validation gives for its options model ``field``."""
    with pytest.raises(ParameterTypeError) as caught:
        flow.validate_parameters(parameters)
    prefix = f"- {field}: Value error, "
    lines = [line.strip() for line in str(caught.value).splitlines() if line.strip().startswith(prefix)]
    assert len(lines) == 1, str(caught.value)
    return lines[0].removeprefix(prefix)


BAD_SEGMENT = [("tile", 100), ("halo", 33), ("batch_size", 0), ("stitch", "wrong"), ("device", "tpu"),
               ("bands", [0, 1]), ("simplify", -1.0), ("min_area", -5.0), ("polygon_cell", 0)]


@pytest.mark.parametrize("field, value", BAD_SEGMENT, ids=[f for f, _ in BAD_SEGMENT])
def test_a_bad_segment_option_fails_in_the_same_line_from_the_cli_and_the_flow(tmp_path, field, value):
    shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    out = tmp_path / "out"
    line = cli_error(["segment", str(tmp_path / "scene.tif"), "--out", str(out), f"--{field.replace('_', '-')}", shown])
    assert line.startswith(f"--{field.replace('_', '-')} ")  # names the option
    assert not out.exists()  # refused before anything was written
    assert flow_error(segment_scene, {"inputs": "scene.tif", "output_root": str(out), "options": {field: value}},
                      "options") == line


BAD_TRAIN = [("steps", 0), ("chip", 16), ("lr", -1.0), ("width", 2.0), ("holdout", 1.0), ("read_threads", -1),
             ("sampling", "everywhere"), ("arch", "fcn4s")]


@pytest.mark.parametrize("field, value", BAD_TRAIN, ids=[f for f, _ in BAD_TRAIN])
def test_a_bad_train_option_fails_in_the_same_line_from_the_cli_and_the_flow(tmp_path, field, value):
    files = {"image": str(tmp_path / "i.tif"), "labels": str(tmp_path / "l.tif"), "out": str(tmp_path / "m.safetensors")}
    args = [f"--{k}={v}" for k, v in files.items()]
    line = cli_error(["train", *args, f"--{field.replace('_', '-')}", str(value)])
    assert line.startswith(f"--{field.replace('_', '-')} ")
    assert flow_error(train_fcn, {"request": {**files, field: value}}, "request") == line


def test_a_misspelt_flow_option_is_refused_by_name():
    with pytest.raises(ParameterTypeError, match="tiles"):
        segment_scene.validate_parameters({"inputs": "x.tif", "output_root": "out", "options": {"tiles": 512}})
    with pytest.raises(ValueError, match="^--tiles: extra inputs are not permitted, got 512$"):
        SegmentOptions(tiles=512)


def test_options_made_again_are_checked_and_travel_whole():
    import pickle

    options = SegmentOptions(tile=128, bands=[1, 2, 3])
    assert options.bands == (1, 2, 3) and options.polygon_cell == 2048  # None: the default cell
    assert pickle.loads(pickle.dumps(options)) == options  # across Dask and Prefect
    assert options.replace(stitch="blend").stitch == "blend"
    with pytest.raises(ValueError, match=r"^--tile must be a positive multiple of 32, got 96\.5$|^--tile: "):
        options.replace(tile=96.5)
    request = TrainRequest(image="i.tif", labels="l.tif", out="m.safetensors", classes=["a", "b"])
    assert pickle.loads(pickle.dumps(request)) == request and request.classes == ("a", "b")


def test_a_run_plan_with_its_options_pickles(tmp_path):
    """A RunPlan travels to Dask workers and between Prefect tasks: its options come back equal."""
    import pickle

    import cloudpickle

    from fcnseg.models import DEMO_MODEL
    from fcnseg.pipeline.orchestrator import output_lock, plan_run
    from fcnseg.pipeline.synth import write_scene

    image, _ = write_scene(tmp_path / "scene", 128, seed=3)
    with output_lock(tmp_path / "out"):
        plan = plan_run(image, DEMO_MODEL, tmp_path / "out", SegmentOptions(tile=64, device="cpu", bands=[1, 2, 3, 4]))
    for dumps in (pickle.dumps, cloudpickle.dumps):
        again = pickle.loads(dumps(plan))
        assert again.options == plan.options and again.options.batch_size == 1 and again.parameters == plan.parameters
