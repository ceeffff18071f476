"""Batch-system backends of the plugin."""
