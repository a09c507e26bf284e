"""The fleet pane: the drone grid and the load-bar cells it draws."""
