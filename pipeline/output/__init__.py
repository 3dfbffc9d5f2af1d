"""The output folder as one room: what OUT holds and who may write it, for a folder and an
object-store prefix alike.

``layout`` (every name in OUT, the run state's included), ``ledger`` (one marker per finished
chunk), ``hold`` (one run per output: the flock of a folder, the lease of a prefix), ``guard``
(what OUT holds against this run), ``complete`` (the one ``is_complete``), ``run_identity`` (what
parameters.json holds: a rerun must match it), ``record`` (the run's report and run.json),
``object_store`` (a prefix: staging, what it holds, the upload), ``file_fields`` (a file's size and
sha256 as item.json records them), ``verify`` (``fcnseg verify``: the folder against its records).

Importing the package imports none of them: ``layout`` stays as light as readers need it.
"""
