"""The agent service: the PC's long-running agent (schedule, check-in, engineers' requests)."""
