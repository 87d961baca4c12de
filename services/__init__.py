"""EdgeFER services: the edge runtime (services/edge) and, later, the device client. No torch here."""
