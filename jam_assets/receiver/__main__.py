"""`python -m jam_assets.receiver`: the telemetry receiver, configured from the environment."""

from .server import main

raise SystemExit(main())
