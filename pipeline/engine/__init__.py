"""The worker-side engine: tiles through the model, without Dask. ``tile_source`` (model input read
ahead on threads), ``staging`` (pinned host-to-device copies), ``predict`` (the model's batched
loop over tiles).

Apart from ``segment/`` (the run on Dask) and ``orchestrator/`` (the products) so that what runs
the same tile loop outside a cluster, ``fcnseg evaluate``, imports neither Dask nor the products.
It imports the loose modules of ``pipeline/`` and ``models/`` only. Importing the package imports
none of its modules.
"""
