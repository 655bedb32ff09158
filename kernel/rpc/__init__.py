"""What every control-plane service shares: errors, validation, the server scaffold,
the one outbound channel factory, and local verification of access tokens."""
