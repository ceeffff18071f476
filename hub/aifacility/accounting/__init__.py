"""Accounting: one ledger of usage records from every layer (notebooks, jobs, Dask workers, offloaded jobs),
and the reports people read (per user, group, resource, site or model; CSV, JSON, HTML with plots; APEL)."""
