"""Process wiring: settings, lazy AWS clients, the clock, logging, metrics."""
