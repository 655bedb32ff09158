"""Identity: accounts with argon2id password hashes, EdDSA JWT access tokens with key ids."""
