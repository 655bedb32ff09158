"""livemesh: the command line, process supervision and what every plane shares."""
