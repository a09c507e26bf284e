"""The ``dragoon`` command: one entry point that hands each verb to the part that owns it."""
