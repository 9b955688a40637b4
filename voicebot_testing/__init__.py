"""What is not production code: fakes of the services voicebot talks to, their loopback server, the simulator."""
