"""Studies built from many runs: the defense grid, the ablations, the activation study, the main job, and the
recomputation of every committed table."""
