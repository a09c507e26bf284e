"""Widgets of the cockpit: grid, tree, log view, bars."""
