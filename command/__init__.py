"""The ``livemesh`` command: the top floor, which names every process of the planes."""
