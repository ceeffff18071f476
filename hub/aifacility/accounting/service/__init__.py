"""The usage service (`/services/usage/`): every user's own usage ("my usage"), and the facility's report for the
hub's admins, read from the accounting ledger."""
