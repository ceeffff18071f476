"""Quotas: who may use what, shared by the spawner, the jobs service and the admin service.

- `reservations`: what running and starting sessions hold, and the atomic check-and-reserve of a spawn;
- `policy`: the limits an admin sets over the facility file's, and the facility they make (`effective`);
- `store`: those policies and their audit trail in the facility's database (SQLAlchemy + Alembic).
"""
