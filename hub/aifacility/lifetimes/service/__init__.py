"""The `lifetimes` hub-managed service: remaining time and extensions, over REST and a small web page."""
