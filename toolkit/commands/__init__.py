"""One module per ``celery-ecs`` sub-command: ``HELP``, ``configure(parser)``, ``run(args)``."""
