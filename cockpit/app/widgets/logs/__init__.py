"""The output pane: the virtualised log view and the spooled line buffer behind it."""
