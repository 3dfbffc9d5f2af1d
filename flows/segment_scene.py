"""Flow ``segment-scene``: every scene of an input folder (or list) segmented into its own output folder.

Thin on purpose: each stage is one call into ``fcnseg.pipeline.orchestrator`` wrapped as a Prefect
task, so a run's page shows where the time went. Tiles never become Prefect task runs: they
move on Dask inside the ``infer`` task, so Prefect's overhead is a handful of task runs per
scene whatever the scene's size. One Dask cluster serves all scenes of a run (started at the first
scene with something to compute: a run with nothing new starts none), and scenes overlap:
a scene's ``finish`` task (export, vectorize, publish) runs in the background while the next
scene's tiles infer.
"""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.tasks import exponential_backoff
from pydantic import Field

from fcnseg.errors import CheckpointError, InputError, ScenesFailed
from fcnseg.flows.logs import route_library_logs
from fcnseg.flows.parameters import described
from fcnseg.flows.report import SceneOutcome, markdown_report
from fcnseg.models import DEMO_MODEL
from fcnseg.pipeline.cluster import dask_client
from fcnseg.pipeline.cluster_specs import load_cluster_spec
from fcnseg.pipeline.option_texts import RUN_HELP
from fcnseg.pipeline.orchestrator import (
    ChunkRun,
    RunPlan,
    RunReport,
    SegmentOptions,
    checked_model,
    compute_chunks,
    export_polygons,
    export_rasters,
    finish_stages,
    plan_run,
    publish,
    run_sequence,
)
from fcnseg.pipeline.orchestrator.finish import VectorizeReport
from fcnseg.pipeline.orchestrator.scenes import catalog_reports, find_scenes, scene_folder
from fcnseg.pipeline.output.object_store import is_object_store

def is_transient(task, task_run, state) -> bool:
    """Retry I/O hiccups (a network file system, an object store); never bad input."""
    try:
        state.result()
    except (InputError, CheckpointError, ValueError, FileNotFoundError, PermissionError):
        return False
    except OSError:
        return True
    except Exception:
        return False
    return False


def artifact_key(kind: str, target: str | Path) -> str:
    """``{kind}-{scene}``: the key a scene's artifact keeps from run to run, so the Artifacts page
    holds one history per scene and kind. ``scene`` is the name of the scene's output folder (its
    STAC item id: stem and a hash of the input's path) in Prefect's alphabet: an artifact key may
    hold lowercase letters, digits and dashes only (anything else and creating the artifact fails
    with a ValidationError, failing the task), so capitals are lowered and every other run of
    characters (``.``, ``_``) becomes one dash."""
    name = str(target).rstrip("/").rsplit("/", 1)[-1]
    return f"{kind}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "scene")


stage = task(
    cache_policy=NO_CACHE, persist_result=False, retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_condition_fn=is_transient,
)


@stage(name="validate")
def validate(inputs: str | list[str], model: str, cluster_spec: str | None = None) -> list[str]:
    """The scenes to process, after checking the model and the cluster spec once (a damaged
    checkpoint or a bad spec stops the run before any scene's folder is touched)."""
    checked_model(model)  # each scene's plan reuses this check
    if cluster_spec is not None:
        load_cluster_spec(cluster_spec)
    return find_scenes(inputs)


@stage(name="plan", task_run_name="plan {scene}")
def plan(scene: str, model: str, out: Path, options: SegmentOptions, overwrite: bool, local: bool,
         destination: str | None) -> RunPlan:
    return plan_run(scene, model, out, options, overwrite=overwrite, local=local, destination=destination)


@stage(name="infer", task_run_name="infer {plan.input}")
def infer(plan: RunPlan, scheduler_address: str) -> ChunkRun:
    """The chunks on Dask, with a progress artifact (percent of the scene's chunks done) that the
    run's page updates as they finish."""
    artifact = create_progress_artifact(0.0, key=artifact_key("progress", plan.target),
                                        description=f"fcnseg: chunks of {plan.input} segmented")

    def show(done: int, total: int) -> None:
        update_progress_artifact(artifact, 100.0 * done / total)

    chunk_run = compute_chunks(plan, scheduler=scheduler_address, progress=False, on_progress=show)
    update_progress_artifact(artifact, 100.0)  # also for a scene whose chunks were all done before
    return chunk_run


@stage(name="export", task_run_name="export {plan.input}")
def export(plan: RunPlan, scheduler_address: str) -> list[str]:
    return export_rasters(plan, scheduler=scheduler_address)


@stage(name="vectorize", task_run_name="vectorize {plan.input}")
def vectorize(plan: RunPlan, scheduler_address: str) -> VectorizeReport | None:
    return export_polygons(plan, scheduler=scheduler_address)


@stage(name="publish", task_run_name="publish {plan.input}")
def publish_outputs(plan: RunPlan, chunk_run: ChunkRun, seconds: dict[str, float], files: list[str],
                    polygons: VectorizeReport | None) -> RunReport:
    """run.json and item.json, then the scene's class areas as a table artifact and a link to its
    output, each keyed by the scene (``artifact_key``) for its history across runs. A scene
    without CRS has no square metres: its ``area_m2`` is null in the table, never a number."""
    report = publish(plan, chunk_run, seconds, files, polygons)
    scene = Path(plan.input).name
    create_table_artifact(
        [{"class": c.class_name, "pixels": c.pixels,
          "area_m2": None if c.area_m2 is None else round(c.area_m2, 1),  # None: no CRS, no metres
          "share_percent": round(100 * c.share, 2),
          **({} if c.mean_confidence is None else {"mean_confidence": round(c.mean_confidence, 4)})}
         for c in report.class_areas],
        key=artifact_key("class-areas", report.out), description=f"fcnseg: class areas of {scene}",
    )
    target = str(report.out)
    create_link_artifact(target if is_object_store(target) else Path(target).resolve().as_uri(),
                         key=artifact_key("outputs", report.out), link_text=f"{scene}: outputs",
                         description=f"fcnseg: the output of {scene}")
    return report


@task(name="finish", task_run_name="finish {plan.input}", cache_policy=NO_CACHE, persist_result=False)
def finish(plan: RunPlan, chunk_run: ChunkRun, seconds: dict[str, float], started: float, scheduler_address: str,
           held: ExitStack) -> RunReport:
    """Export, vectorise and publish one scene (while the flow goes on with the next scene's
    inference on the same cluster), then let go of its folder. Its stages share the flow's Dask
    client (``dask_client`` hands a task the client this process holds for the address)."""
    with held:
        return finish_stages(plan, chunk_run, seconds, started, export=lambda p: export(p, scheduler_address),
                             vectorize=lambda p: vectorize(p, scheduler_address), publish=publish_outputs)


class SceneCluster:
    """The flow's one Dask client, started when the first scene needs it (chunks to compute or
    products to make) and kept for every scene after: a nightly run with nothing new starts no
    cluster. A cluster that fails to start is tried once; each scene after fails with its error."""

    def __init__(self, stack: ExitStack, logger, scheduler_address: str | None, cluster_spec: str | None,
                 workers: int | None, device: str) -> None:
        self.stack, self.logger = stack, logger
        self.source = (scheduler_address, cluster_spec, workers, device)
        self.client = None
        self.error: Exception | None = None

    def address(self) -> str:
        """The scheduler's address, the cluster started (or reached) on the first call."""
        if self.error is not None:
            raise self.error
        if self.client is None:
            try:
                self.client = self.stack.enter_context(dask_client(*self.source))
            except Exception as exc:
                self.error = exc
                raise
            self.logger.info("Dask at %s (dashboard %s)", self.client.scheduler.address, self.client.dashboard_link)
        return self.client.scheduler.address


def start_scene(scene: str, model: str, output_root: str, options: SegmentOptions, cluster: SceneCluster, *,
                overwrite: bool, local: bool) -> RunReport | PrefectFuture[RunReport]:
    """Plan and infer one scene holding its folder, then hand the folder to its ``finish`` task and
    return that task's future: the orchestrator's stage sequence (``run_sequence``) with this flow's
    tasks as its stages. A complete output is skipped (its report, no cluster needed); an
    interrupted one resumes; a folder held by another run fails this scene."""
    started = time.perf_counter()
    return run_sequence(
        scene_folder(output_root, scene), started,
        plan=lambda folder, destination: plan(scene, model, folder, options, overwrite, local, destination),
        infer=lambda run_plan: infer(run_plan, cluster.address()),
        finish=lambda run_plan, chunk_run, seconds, held: finish.submit(
            run_plan, chunk_run, seconds, started, cluster.address(), held),
    )


def catalog_scenes(logger, output_root: str, outcomes: list[SceneOutcome]) -> None:
    """``output_root/catalog.json``: a STAC catalog of every scene's item there (this run's and
    earlier runs'), in a folder or under an object-store prefix alike (``scenes.catalog_reports``)."""
    catalog = catalog_reports(output_root, [o.report for o in outcomes if o.report is not None])
    if catalog is not None:
        logger.info("STAC catalog: %s", catalog)


def failure(logger, scene: str, exc: Exception) -> SceneOutcome:
    """A failed scene: logged, and its row in the report."""
    logger.error("%s: %s", scene, exc)
    return SceneOutcome(scene, "failed", error=f"{type(exc).__name__}: {exc}")


@flow(name="segment-scene", log_prints=False)
@described
def segment_scene(
    inputs: Annotated[str | list[str], Field(description=(
        "Scenes to segment: paths, folders (their .tif, .tiff, .vrt, .jp2 and .img files), globs or URIs."))],
    output_root: Annotated[str, Field(description=(
        "Folder (or object-store URI) under which each scene gets its own output folder, named as its STAC item."))],
    model: Annotated[str | None, Field(description=RUN_HELP["model"])] = None,
    options: Annotated[SegmentOptions | None, Field(description=(
        "How each scene is segmented and what is made from it: fcnseg segment's options (default: its defaults)."
        " Given, it replaces the deployment's options as a whole."))] = None,
    scheduler_address: Annotated[str | None, Field(description=RUN_HELP["scheduler"])] = None,
    cluster_spec: Annotated[str | None, Field(description=RUN_HELP["cluster_spec"])] = None,
    workers: Annotated[int | None, Field(ge=1, description=RUN_HELP["workers"])] = None,
    overwrite: Annotated[bool, Field(description=RUN_HELP["overwrite"])] = False,
) -> dict[str, Any]:
    """Segment every scene in ``inputs`` (paths, folders, globs, URIs) into ``output_root/<scene>/``.

    ``options`` are ``fcnseg segment``'s (``SegmentOptions``: tile, halo, stitch, batch_size, device,
    probabilities, tta, bands, cog, polygons, simplify, min_area, polygon_cell, quicklook, stac), with the
    same defaults and the same one-line errors. The Dask cluster is ``scheduler_address``, one started
    from ``cluster_spec`` (deploy/clusters/NAME.yaml), or ``workers`` local processes; it is started
    at the first scene with something to compute, so a run with nothing new starts none. A scene
    whose output is complete for this model and these parameters is skipped; a bad scene fails
    alone, and the run ends Failed naming it after the others are done. ``overwrite`` replaces what a
    scene's folder holds from a run with another model or other parameters (without it that scene fails).
    """
    logger = get_run_logger()
    route_library_logs()
    model = str(model or DEMO_MODEL)
    options = options or SegmentOptions()
    scenes = validate(inputs, model, cluster_spec)
    outcomes: list[SceneOutcome] = []
    with ExitStack() as stack:
        cluster = SceneCluster(stack, logger, scheduler_address, cluster_spec, workers, options.device)
        logger.info("%d scene(s)", len(scenes))
        tails: list[tuple[int, PrefectFuture[RunReport]]] = []
        for scene in scenes:
            try:
                started = start_scene(scene, model, output_root, options, cluster, overwrite=overwrite,
                                      local=scheduler_address is None and cluster_spec is None)
            except Exception as exc:  # one bad scene must not stop the others
                outcomes.append(failure(logger, scene, exc))
                continue
            if isinstance(started, RunReport):
                outcomes.append(SceneOutcome(scene, "skipped", report=started))
            else:  # its export and polygons run while the next scene infers
                outcomes.append(SceneOutcome(scene, "processed"))
                tails.append((len(outcomes) - 1, started))
        for index, future in tails:
            try:
                outcomes[index].report = future.result()
            except Exception as exc:
                outcomes[index] = failure(logger, outcomes[index].scene, exc)
    catalog_scenes(logger, output_root, outcomes)
    create_markdown_artifact(markdown=markdown_report(outcomes, output_root), key="segment-scene-report",
                             description="fcnseg: scenes processed, skipped and failed")
    failed = [o.scene for o in outcomes if o.status == "failed"]
    if failed:
        raise ScenesFailed(f"{len(failed)} of {len(outcomes)} scene(s) failed: {', '.join(failed)}")
    return {o.scene: {"status": o.status, "out": str(o.report.out)} for o in outcomes if o.report is not None}
