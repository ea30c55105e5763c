"""What every stage uses.

Errors, atomic writes, disk space, the run lock, GPU leases, the runtime (device, precision,
compilation), settings, and the workflow run on a copy of itself.
"""
