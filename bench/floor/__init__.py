"""The floor: the same SQL as the service, with nothing else around it."""
