"""Stand-in of the ``comfy`` package (tests only)."""
