"""``python -m ugro_health``: the same entry point as the ``ugro-health`` script."""

from ugro_health.cli.app import main

if __name__ == "__main__":
    main()
