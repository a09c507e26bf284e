"""Widgets of the cockpit, grouped by the pane they make up (as Posting groups its own).

``fleet/`` is the drone grid, ``tasks/`` the task tree, ``logs/`` the output
pane and its buffer. ``connection_bar`` belongs to no pane: it sits above all
of them and speaks for the whole app.
"""
