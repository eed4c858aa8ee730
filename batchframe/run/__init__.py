"""Running: the facades (run, resume, retry), preparing a run, executing it, the supervisor and the driver."""
