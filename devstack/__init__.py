"""Run everything on one machine: embedded broker, simulator, workers, demo traffic."""
