"""The pilot verbs of CLI.md as click commands, one module per family of verbs.

dragoon/cli.py's VERBS table names each command by its own module
(``dragoon.cockpit.cli.tasks:run``), and this package imports none of them:
``dragoon run`` loads the module of ``run`` and not those of ``drones``,
``fetch`` or ``login``. Each verb imports the API client (httpx), rich and the
key code only when it runs.
"""
