"""ugro_health.engine: fan-out, scoring, breakers, scheduling and the watch loop."""

# The poll threads' name prefix: the CLI looks for them at exit (cli/app.py).
POLL_THREAD_PREFIX = "ugro-poll"
