"""The service registry: instances register, heartbeat and expire; watchers see changes."""
