"""The hub's own routes: sync and node enrolment."""
