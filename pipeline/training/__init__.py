"""Training and evaluation glue between labelled rasters on disk and ``fcnseg.models``."""
