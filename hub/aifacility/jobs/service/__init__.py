"""The `jobs` hub-managed service: submit, list, read, follow and cancel batch and notebook jobs over REST."""
