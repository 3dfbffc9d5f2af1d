"""fcnseg: segment arbitrarily large geospatial rasters with an FCN-8s, tile by tile, seamlessly."""

__version__ = "0.1.0"
