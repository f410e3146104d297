"""Procurify (cloud procurement): REST client, configuration section, ping checks."""
