"""The command-line tools (``tools/*.py`` and the ``reid-*`` console scripts run these modules' ``main``)."""
