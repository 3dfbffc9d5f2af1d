"""Questions asked of a label map: true areas in any CRS, and how much of each class lies in a selection."""
