"""The pilot's side of dragoon: the relay API client, the `dragoon <verb>` CLI, the cockpit TUI.

Nothing is imported here on purpose: ``dragoon --help`` and every CLI verb
must start without loading httpx, rich or Textual until a verb needs them.
"""
