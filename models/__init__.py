"""Model files shipped with kickit (the bridge default model lives here)."""
