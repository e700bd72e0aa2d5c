"""ipcjanitor: remove System V IPC objects that a policy says a service owns and that are
provably unused; keep, and explain, everything else."""

__version__ = "0.1.0"
