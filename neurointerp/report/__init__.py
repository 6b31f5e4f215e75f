"""PNG figures and the HTML summary."""
