"""Integrations written the way real clients call the sandbox (issue 23): each test names the client behaviour it stands for."""
