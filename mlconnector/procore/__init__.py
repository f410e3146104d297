"""Procore (construction project management): REST client, configuration section, ping checks."""
