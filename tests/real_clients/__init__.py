"""Integrations written the way real clients call API Particulier: what they send beyond the
spec (tracking parameters, blanks for unknown parts, names in any case, an INE with the civil
status), each test naming the client behaviour it stands for."""
