"""Reading and checking migration sets; applying them lives in activities/."""
