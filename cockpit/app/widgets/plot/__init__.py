"""The job view\x27s plot: a braille canvas and the widget that shows it."""
