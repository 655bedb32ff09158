"""The experimentation service: experiments and flags (issue 16)."""
