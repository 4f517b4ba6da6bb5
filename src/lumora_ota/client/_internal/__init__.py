"""Private helpers of the client SDK; not a public API."""
