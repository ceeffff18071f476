"""The admin service: policies per group and per user (web pages, REST API), with their audit trail."""
