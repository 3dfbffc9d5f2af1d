"""Files made from a finished label store: COGs, polygons, the quicklook and the STAC item."""
