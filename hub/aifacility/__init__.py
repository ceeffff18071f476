"""aifacility: a multi-tenant analysis facility for physicists."""
