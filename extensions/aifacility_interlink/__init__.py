"""The interLink plugin (SLURM and HTCondor backends) of aifacility."""
