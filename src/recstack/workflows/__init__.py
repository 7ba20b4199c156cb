"""End-to-end jobs behind the CLI: train, evaluate, predict, inspect, export, index, serve."""
