"""Framework integrations, installed as segwatch.adapters."""
