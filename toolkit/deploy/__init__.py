"""``celery-ecs deploy``: render the root stack from celery-ecs.toml, upload, change set, events.

    master      ``render_master(settings)``: the root template, pure
    artifacts   the Lambda zips and templates with their content-addressed S3 keys; the upload
    stack       change set (create or update), its summary, streamed stack events
"""

from toolkit.deploy.master import BUNDLED_CONFIG, logical_ids, render_master

__all__ = ["BUNDLED_CONFIG", "logical_ids", "render_master"]
