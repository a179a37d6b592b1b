"""One module per ``celery-ecs`` sub-command: ``configure(parser)`` and ``run(args)``."""
