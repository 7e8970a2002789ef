"""Small helpers shared by every subsystem (atomic writes, devices, seeding)."""
