"""ml-connector: keeps ERP and procurement systems in step with Jira."""

__version__ = "0.1.0"
