"""The tasks pane: the drone → state → task tree."""
