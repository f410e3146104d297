"""JD Edwards EnterpriseOne (AIS Server) side of the `sync jde-jira` pair."""
