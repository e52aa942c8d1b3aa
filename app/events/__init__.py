"""Live product events: changes to the catalogue, streamed to clients."""
