"""JAGGAER (source-to-pay): REST client (both token formats, returnCode checks, FIQL filters, start paging),
configuration section, ping checks."""
