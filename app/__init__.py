"""Storefront API: a reference production REST service."""

# The version of the service, in its OpenAPI document and its traces.
__version__ = "1.0.0"
