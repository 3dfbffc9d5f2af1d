"""The data path from an input raster to the files an analyst opens (see docs/design.md): tiles and I/O at
the bottom, the ``segment`` stages, the ``products`` of a finished store, ``analysis``, ``training``
glue and the ``synth`` scene generator."""
