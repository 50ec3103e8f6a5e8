"""Study platform."""
