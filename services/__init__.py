"""EdgeFER services: the edge runtime (services/edge), the device client (services/client) and the local demo
fleet (services/demo). No torch here."""
